"""Describe a batch of generated tunes the way the folk-rnn papers did, next to the training corpus.

Is each tune well-formed ABC, do its bars add up to its meter, are its repeats balanced; which
meters, keys and lengths does the batch use; and did the model copy phrases (4+ bars) from its
training tunes or fall back on stock phrases that other tunes of the batch share. Every figure is a
share of tunes, so batches of any size compare.
The checks of single tunes live in abcjax.abc; this module counts them up and compares bars.
"""

import collections
import statistics

from abcjax import abc, copying, corpus
from abcjax.errors import AbcjaxError

_SHARES = (
    ("well-formed", "well_formed_fraction"),
    ("bars match meter", "bars_match_meter_fraction"),
    ("repeats balanced", "repeats_balanced_fraction"),
    ("exact duplicates", "duplicate_fraction"),
    (f"share {copying.RUN}+ bars with another", "repeats_another_fraction"),
    (f"copied {copying.RUN}+ bars", "copied_fraction"),
)
_TABLE_ROWS = 12  # most common meters or keys shown; the rest share one row


def evaluate_tunes(tunes: list[str], corpus_tunes: list[str] | None = None) -> dict:
    """The report on a batch of tunes (JSON-able): shares, distributions and a per-tune list.

    Variety: how many tunes share a phrase (4 bars in a row, note for note) with another tune of the
    batch. With corpus_tunes (the training tunes) it describes them too, says which tunes copy a
    phrase of them (the check of `sample --require novel`), and finds for each tune the training tune
    it shares its longest run of bars with.
    """
    if not tunes:
        raise AbcjaxError("no tunes to evaluate: give ABC text with at least one tune starting with an X: line")
    parsed = [abc.Tune.read(tune) for tune in tunes]
    examined = abc.examine(parsed)
    bars = [tune_bars for _, tune_bars in examined]
    repeats = copying.repeats_another(bars)
    report = _describe(tunes, parsed, examined, repeats) | {"copied_fraction": None, "corpus": None}
    nearest: list[dict | None] = [None] * len(tunes)
    copied: list[bool | None] = [None] * len(tunes)
    if corpus_tunes:
        corpus_parsed = [abc.Tune.read(tune) for tune in corpus_tunes]
        corpus_examined = abc.examine(corpus_parsed)
        corpus_bars = [tune_bars for _, tune_bars in corpus_examined]
        report["corpus"] = _describe(corpus_tunes, corpus_parsed, corpus_examined, copying.repeats_another(corpus_bars))
        training = copying.phrases_of(corpus_bars)
        copied = [copying.copies(tune_bars, training) for tune_bars in bars]
        report["copied_fraction"] = _share(copied)
        nearest = _nearest_tunes(bars, corpus_parsed, corpus_bars)
    per_tune = zip(tunes, parsed, examined, _duplicate_of(parsed), repeats, copied, nearest, strict=True)
    report["tunes"] = [
        {"index": index, "title": tune.field("T"), "length": len(text), **checks}
        | {"duplicate_of": first, "repeats_another": repeat, "copied": copy, "nearest": match}
        for index, (text, tune, (checks, _), first, repeat, copy, match) in enumerate(per_tune)
    ]
    return report


def quality(tunes: list[str], training_phrases: frozenset[int]) -> dict[str, float]:
    """The shares that say how good a batch of generated tunes is, as evaluate_tunes counts them:
    well_formed_fraction, bars_match_meter_fraction, repeats_another_fraction (variety) and
    copied_fraction (phrases of the training tunes), for the figures logged while training."""
    examined = abc.examine([abc.Tune.read(tune) for tune in tunes])
    bars = [tune_bars for _, tune_bars in examined]
    return {
        "well_formed_fraction": _share(checks["well_formed"] for checks, _ in examined),
        "bars_match_meter_fraction": _share(checks["bars_match_meter"] for checks, _ in examined),
        "repeats_another_fraction": _share(copying.repeats_another(bars)),
        "copied_fraction": _share(copying.copies(tune_bars, training_phrases) for tune_bars in bars),
    }


def evaluate_files(paths: list[str], corpus_path: str | None = None) -> dict:
    """evaluate_tunes on every tune in paths (files, directories or comma lists), against the training
    tunes of corpus_path if given; unreadable, empty or tune-less files are an AbcjaxError."""
    tunes = [tune for path in paths for tune in corpus.read_all_tunes(path)]
    corpus_tunes = list(corpus.read_corpus(corpus_path).tunes) if corpus_path else None
    return evaluate_tunes(tunes, corpus_tunes)


def format_table(report: dict) -> str:
    """The report as a table a person reads at a glance: shares in %, the corpus beside when given."""
    columns = [report] if report["corpus"] is None else [report, report["corpus"]]
    rows = [("", *("generated", "corpus")[: len(columns)]), ("tunes", *(f"{c['num_tunes']:,}" for c in columns))]
    for label, key in _SHARES:
        if report.get(key) is not None:
            rows.append((label, *(_percent(c.get(key)) for c in columns)))
    for stat in ("mean", "median", "min", "max"):
        rows.append((f"length {stat} (chars)", *(f"{c['length'][stat]:,.0f}" for c in columns)))
    for name in ("meters", "keys"):
        rows += _distribution_rows(name[:-1], [(c[name], c["num_tunes"]) for c in columns])
    width = max(len(row[0]) for row in rows)
    return "\n".join(row[0].ljust(width) + "".join(cell.rjust(11) for cell in row[1:]) for row in rows)


def _describe(
    tunes: list[str], parsed: list[abc.Tune], examined: list[tuple[dict, list[str]]], repeats: list[bool]
) -> dict:
    """The batch's shares of tunes passing each check, its exact duplicates and tunes that share a phrase
    with another (repeats), meters, keys and lengths."""
    checks = [tune_checks for tune_checks, _ in examined]
    lengths = [len(tune) for tune in tunes]
    report: dict = {"num_tunes": len(tunes)}
    for name in ("well_formed", "bars_match_meter", "repeats_balanced"):
        report[f"{name}_fraction"] = _share(tune_checks[name] for tune_checks in checks)
    report["duplicate_fraction"] = _share(first is not None for first in _duplicate_of(parsed))
    report["repeats_another_fraction"] = _share(repeats)
    for name in ("meter", "key"):
        counts = collections.Counter("(none)" if c[name] is None else c[name] for c in checks)
        report[f"{name}s"] = dict(counts.most_common())
    report["length"] = {
        "mean": statistics.fmean(lengths),
        "median": statistics.median(lengths),
        "min": min(lengths),
        "max": max(lengths),
    }
    return report


def _duplicate_of(tunes: list[abc.Tune]) -> list[int | None]:
    """For each tune, the index of the first earlier tune with the same text but for X:, or None."""
    first: dict[str, int] = {}
    seen = [first.setdefault("\n".join(tune.without_x()), index) for index, tune in enumerate(tunes)]
    return [None if earlier == index else earlier for index, earlier in enumerate(seen)]


def _nearest_tunes(
    tunes: list[list[str]], corpus_tunes: list[abc.Tune], corpus_bars: list[list[str]]
) -> list[dict | None]:
    """For each tune (as its bars' notes), the training tune sharing its longest run of bars, or None
    when it shares no bar; the earliest training tune wins a tie. The longest run is what copying is
    judged by, so the nearest tune is the one a copy came from."""
    where: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)  # bar -> (training tune, position)
    for tune_index, bars in enumerate(corpus_bars):
        for position, notes in enumerate(bars):
            where[notes].append((tune_index, position))
    return [_nearest(bars, where, corpus_tunes) for bars in tunes]


def _nearest(bars: list[str], where: dict, corpus_tunes: list[abc.Tune]) -> dict | None:
    longest: dict[int, int] = {}  # training tune -> longest run shared so far
    runs: dict[tuple[int, int], int] = {}  # (training tune, position) -> run ending at the previous bar
    for notes in bars:
        runs = {(tune, position): runs.get((tune, position - 1), 0) + 1 for tune, position in where.get(notes, ())}
        for (tune, _), run in runs.items():
            longest[tune] = max(longest.get(tune, 0), run)
    if not longest:
        return None
    best = min(longest, key=lambda tune: (-longest[tune], tune))
    found = corpus_tunes[best]
    return {"index": best, "x": found.field("X"), "title": found.field("T"), "shared_bars": longest[best]}


def _share(passed) -> float:
    """The fraction of True among booleans."""
    values = list(passed)
    return sum(values) / len(values)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _distribution_rows(label: str, columns: list[tuple[dict, int]]) -> list[tuple[str, ...]]:
    """One row per meter or key, most common first, each column's counts as shares of its tunes;
    values past _TABLE_ROWS share one row."""
    counts = [column_counts for column_counts, _ in columns]
    names = sorted(set().union(*counts), key=lambda name: (*(-c.get(name, 0) for c in counts), name))

    def row(title: str, group: list[str]) -> tuple[str, ...]:
        return (title, *(_percent(sum(c.get(name, 0) for name in group) / total) for c, total in columns))

    rows = [row(f"{label} {name}", [name]) for name in names[:_TABLE_ROWS]]
    if names[_TABLE_ROWS:]:
        rows.append(row(f"{label} ({len(names) - _TABLE_ROWS} others)", names[_TABLE_ROWS:]))
    return rows
