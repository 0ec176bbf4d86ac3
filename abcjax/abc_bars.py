"""Do a tune's bars fill its meter, and do its repeats pair up: the checks a musician makes by eye.

A full bar lasts exactly what M: says. ABC allows short bars where the music makes up for them, and
only there: a pickup (the tune's first bar, or the first bar after a section edge: any bar line but
a plain `|`), the tune's last bar, and a bar split by a section edge, whose first half must add up
to a whole bar with a bar that follows it when the tune is played: the next bar, or after a `:|`
the first bar of the part it repeats (the `ABc d2 :|` that completes the pickup `f |` of its part,
also where the pickup stands before the `|:`, as engravers write it). A first ending may start
mid-bar, as old prints have it: the bar then adds up both ways it is played, three pieces the
first time (`G2G [1 G2 :|` and the pickup) and two the second (`G2G [2 G3 ||`).
Nothing may be overfull.
"""

from __future__ import annotations

from abcjax.abc_reader import Bar, BarLine


def bar_faults(bars: list[Bar]) -> list[str]:
    """The bars (of one voice) that do not fill their meter as ABC 2.1 allows, each as a message."""
    faults = []
    for index, bar in enumerate(bars):
        if bar.fills():
            continue
        if bar.duration > bar.expected * max(bar.rest_bars, 1):
            faults.append(_describe(bar, index, "overfull"))
        elif not (_is_pickup(bars, index) or index == len(bars) - 1 or _completed(bars, index)):
            faults.append(_describe(bar, index, "short"))
    return faults


def _is_pickup(bars: list[Bar], index: int) -> bool:
    """The tune's first bar, or the first after a section edge, may be short: an anacrusis."""
    return index == 0 or (bars[index].opens is not None and bars[index].opens.section)


def _completed(bars: list[Bar], index: int) -> bool:
    """A short bar before a section edge, completed by what follows it in playing order: the next bar,
    or after a `:|` the first bar of the part it repeats. A bar cut short by a first ending
    (`G2G [1 G2 :|[2 G3 ||`) must be completed both ways: through the first ending (with the part's
    pickup after its `:|`, three pieces) and through the second."""
    bar = bars[index]
    if bar.closes is None or not bar.closes.section:
        return False
    rest = bar.expected - bar.duration
    if _ending_number(bar.closes) == 1 and not bar.closes.repeat_end:
        second = _second_ending(bars, index)
        paths = [[index + 1]] + ([[second]] if second is not None else [])
        return all(_fills(bars, path, rest, pieces=2) for path in paths)
    return _fills(bars, _following(bars, index), rest, pieces=1)


def _fills(bars: list[Bar], candidates: list[int], rest, pieces: int) -> bool:
    """Whether one of the candidate bars lasts exactly `rest`, or (with pieces to spare) is shorter and
    is itself completed, across its own section edge, by what follows it."""
    for after in candidates:
        if not 0 <= after < len(bars):
            continue
        duration = bars[after].duration
        if duration == rest:
            return True
        closes = bars[after].closes
        if pieces > 1 and duration < rest and closes is not None and closes.section:
            if _fills(bars, _following(bars, after), rest - duration, pieces - 1):
                return True
    return False


def _following(bars: list[Bar], index: int) -> list[int]:
    """The bars that may be played right after bar `index`: the next, and after a `:|` the first bar of
    the part it repeats (or the pickup written before that part's `|:`, as engravers write it)."""
    following = [index + 1]
    if bars[index].closes is not None and bars[index].closes.repeat_end:
        start = _repeat_start(bars, index)
        following.append(start)
        if start > 0 and bars[start].opens.repeat_start:
            following.append(start - 1)  # A|:DFA ...|GBd gd:|, the pickup written before the |:
    return following


def _second_ending(bars: list[Bar], index: int) -> int | None:
    """The first bar of the second ending of the first ending that starts after bar `index`: the bar
    after the `:|` that closes the first ending, if an ending starts there (else None: no second)."""
    closed = next((later for later in range(index + 1, len(bars)) if bars[later].opens.repeat_end), None)
    return closed if closed is not None and (_ending_number(bars[closed].opens) or 0) > 1 else None


def _ending_number(line: BarLine | None) -> int | None:
    """The first ending a bar line starts (`[2`, `:|2`, `[1,3` -> 1), or None."""
    first = line.ending.split(",")[0].split("-")[0] if line is not None else ""
    return int(first) if first.isdigit() else None


def _repeat_start(bars: list[Bar], index: int) -> int:
    """The first bar of the part that the `:|` after bar `index` repeats: the one after the last `|:`,
    else the one after the previous `:|` (a part without `|:` repeats from its start), else the first.
    When that previous `:|` opened a second ending, the part starts after the bar line that closes
    the ending (`||`, `|]`, `[|`; ABC 2.1 section 4.10), with the part's own pickup."""
    for earlier in range(index, 0, -1):
        opens = bars[earlier].opens
        if opens is not None and (opens.repeat_start or opens.repeat_end):
            if opens.repeat_end and not opens.repeat_start and opens.ending:
                closed = (later for later in range(earlier + 1, index + 1) if _closes_ending(bars[later].opens))
                return next(closed, earlier)
            return earlier
    return 0


def _closes_ending(line: BarLine | None) -> bool:
    return line is not None and line.section and not line.ending


def _describe(bar: Bar, index: int, what: str) -> str:
    expected = bar.expected * max(bar.rest_bars, 1)
    hint = ""
    if what == "overfull" and (bar.duration / expected).denominator == 1:
        hint = f", {bar.duration / expected} bars' worth: a bar line missing?"
    return f"line {bar.line}: bar {index + 1} is {what}: {bar.duration} of {expected} ({bar.notes}){hint}"


def repeats_balanced(bar_lines: list[BarLine]) -> bool:
    """Every |: closed by a :| (or ::) before the next |: and the end, and every ending after the first
    following an ending and a :|. A :| with no |: repeats from the start of its part (ABC allows it).
    Give it one voice's bar lines: voices written line by line repeat each on its own."""
    opened = ending_seen = closed = False
    for line in bar_lines:
        if line.repeat_end:
            opened, closed = False, True
        if line.repeat_start:
            if opened:
                return False
            opened = True
        if line.ending:
            number = _ending_number(line)
            if number is not None and number > 1 and not (ending_seen and closed):
                return False
            ending_seen, closed = True, False
    return not opened
