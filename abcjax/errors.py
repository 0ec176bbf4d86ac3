"""The one error type abcjax raises for user mistakes."""


class AbcjaxError(Exception):
    """A user-facing problem: the message says what is wrong and what to do; the CLI prints it as one line."""


def first_line(error: BaseException) -> str:
    """The first line of a library's error, to quote inside an AbcjaxError's single line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
