"""The one error type abcjax raises for user mistakes."""


class AbcjaxError(Exception):
    """A user-facing problem: the message says what is wrong and what to do; the CLI prints it as one line."""
