"""Do a tune's bars fill its meter, and do its repeats pair up: the checks a musician makes by eye.

A full bar lasts exactly what M: says. ABC allows short bars where the music makes up for them, and
only there: a pickup (the tune's first bar, or the first bar after a section edge: any bar line but
a plain `|`), the tune's last bar, and a bar split by a section edge, whose first half must add up
to a whole bar with a bar that follows it when the tune is played: the next bar, or after a `:|`
the first bar of the part it repeats (the `ABc d2 :|` that completes the pickup `f |` of its part,
also where the pickup stands before the `|:`, as engravers write it).
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
    """A short bar before a section edge, completed by a short bar that follows it in playing order."""
    bar = bars[index]
    if bar.closes is None or not bar.closes.section:
        return False
    following = [index + 1]
    if bar.closes.repeat_end:
        start = _repeat_start(bars, index)
        following.append(start)
        if start > 0 and bars[start].opens.repeat_start:
            following.append(start - 1)  # A|:DFA ...|GBd gd:|, the pickup written before the |:
    return any(0 <= after < len(bars) and bar.duration + bars[after].duration == bar.expected for after in following)


def _repeat_start(bars: list[Bar], index: int) -> int:
    """The first bar of the part that the `:|` after bar `index` repeats: the one after the last `|:`,
    else the one after the previous `:|` (a part without `|:` repeats from its start), else the first."""
    for earlier in range(index, 0, -1):
        opens = bars[earlier].opens
        if opens is not None and (opens.repeat_start or opens.repeat_end):
            return earlier
    return 0


def _describe(bar: Bar, index: int, what: str) -> str:
    expected = bar.expected * max(bar.rest_bars, 1)
    hint = ""
    if what == "overfull" and (bar.duration / expected).denominator == 1:
        hint = f", {bar.duration / expected} bars' worth: a bar line missing?"
    return f"line {bar.line}: bar {index + 1} is {what}: {bar.duration} of {expected} ({bar.notes}){hint}"


def repeats_balanced(bar_lines: list[BarLine]) -> bool:
    """Every |: closed by a :| (or ::) before the next |: and the end, and every ending after the first
    following an ending and a :|. A :| with no |: repeats from the start of its part (ABC allows it)."""
    opened = ending_seen = closed = False
    for line in bar_lines:
        if line.repeat_end:
            opened, closed = False, True
        if line.repeat_start:
            if opened:
                return False
            opened = True
        if line.ending:
            first = line.ending.split(",")[0].split("-")[0]
            if first.isdigit() and int(first) > 1 and not (ending_seen and closed):
                return False
            ending_seen, closed = True, False
    return not opened
