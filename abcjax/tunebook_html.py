"""`abcjax render --html`: one offline web page for a whole tunebook, to browse, hear and see its tunes.

abcjax.render makes each tune's files (.abc, .mid, .ogg, .svg); this module gathers what is known of
each tune (the checks of `abcjax evaluate`, and the fields of `abcjax sample --jsonl` when given) and
writes DIR/index.html from the template in abcjax/web: the tunes as JSON, the page's script and style,
and the vendored abcjs that draws the sheet music. The page loads nothing from the network. It plays the
pre-rendered Ogg Vorbis files in <audio> elements, because abcjs's own synthesizer fetches its
instrument samples by XMLHttpRequest, which a browser refuses to a page opened from disk (see
docs/tunebook.md).
"""

from __future__ import annotations

import html
import importlib.resources
import json
import math
import os
import pathlib
import re

from abcjax import abc, evaluate, render, storage
from abcjax.corpus import find_abc_files, read_all_tunes, read_corpus
from abcjax.errors import AbcjaxError

PAGE_FORMATS = {"abc", "midi", "ogg", "svg"}  # the files the page links to and plays
# Per-tune keys the page leaves out: positions in a list mean nothing to a reader, and the title and
# text are shown as such.
_NOT_FIELDS = {"index", "title", "abc", "duplicate_of", "nearest"}
_KINDS = ("check", "text", "number", "list")  # the page's kinds of field, in display order
_JSONL_HINT = "give the file that `abcjax sample --jsonl` wrote with this tunebook"


def render_html(
    path: str,
    out_dir: str,
    formats: set[str],
    jsonl: str | None = None,
    progress: bool = True,
    timeout: float = render.DEFAULT_TIMEOUT_S,
    jobs: int | None = None,
) -> str:
    """Renders path's tunes into out_dir (formats and PAGE_FORMATS) and writes out_dir/index.html, a page
    of all of them; returns the run's summary line. A bad --jsonl is an error before anything is written."""
    corpus = read_corpus(path)
    tunes = render.tune_files(corpus.tunes)
    extras = read_jsonl(jsonl, tunes, read_all_tunes(path)) if jsonl else [{} for _ in tunes]
    report = render.render_tunebook(path, out_dir, set(formats) | PAGE_FORMATS, progress, timeout, jobs)
    index = pathlib.Path(out_dir) / "index.html"
    if progress:  # evaluating takes a few seconds per 10,000 tunes
        print(f"checking {len(tunes):,} tunes for {index}", flush=True)
    checks, notes = _tune_checks(corpus.tunes)
    rows = [{**extra, **check} for extra, check in zip(extras, checks, strict=True)]
    fields = _fields(rows)
    shown = {field["name"] for field in fields}
    rows = [{name: _finite(value) for name, value in row.items() if name in shown} for row in rows]
    data = {
        "header": _book_header(path),
        "notes": notes + _render_notes(report),
        "fields": fields,
        "tunes": _tune_records(tunes, rows, report),
    }
    storage.write_text_atomically(
        storage.as_path(str(index)), page_html(pathlib.Path(path).name, data), "the tunebook page"
    )
    return f"{report.summary()}; wrote {index}"


def read_jsonl(path: str, tunes: list[render.TuneFile], all_tunes: list[str]) -> list[dict]:
    """Each tune's fields from path, one JSON object a line with the tune's "abc" text (as `abcjax sample
    --jsonl` writes), matched to the tunes by their text; {} for a tune without a line. all_tunes is every
    tune of the tunebook, those that cannot be rendered (no K: line, no music) too, whose lines are passed
    over. An unreadable file, a line that is not such an object, or one whose tune is not in all_tunes is
    an AbcjaxError."""
    where = {abc.Tune.read(tune): None for tune in all_tunes}
    where |= {abc.Tune.read(tune.text): index for index, tune in enumerate(tunes)}
    extras: list[dict] = [{} for _ in tunes]
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise AbcjaxError(f"{path} line {number} is not JSON ({error.msg}): {_JSONL_HINT}") from None
        if not isinstance(record, dict) or not isinstance(record.get("abc"), str):
            raise AbcjaxError(f'{path} line {number} is not a tune\'s object with its "abc" text: {_JSONL_HINT}')
        tune = abc.Tune.read(record["abc"])
        if tune not in where:
            raise AbcjaxError(f"{path} line {number} is a tune the tunebook does not hold: {_JSONL_HINT}")
        if where[tune] is not None:
            extras[where[tune]] = {key: value for key, value in record.items() if key not in _NOT_FIELDS}
    return extras


def page_html(title: str, data: dict) -> str:
    """The page: abcjax/web's template with the title, the data as JSON, the style, script and abcjs filled in."""
    web = importlib.resources.files("abcjax") / "web"
    abcjs = (web / "abcjs-basic-min.js").read_text(encoding="utf-8")
    # "<" escaped: JSON inside a <script> element must not hold "</script>" or "<!--".
    as_json = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    parts = {
        "title": html.escape(title),
        "style": (web / "tunebook.css").read_text(encoding="utf-8"),
        "data": as_json,
        "abcjs_version": re.search(r"v(\d+\.\d+\.\d+)", abcjs.partition("\n")[0])[1],
        "abcjs_license": (web / "abcjs-LICENSE.md").read_text(encoding="utf-8"),
        "abcjs": abcjs,
        "app": (web / "tunebook.js").read_text(encoding="utf-8"),
    }
    template = (web / "tunebook.html").read_text(encoding="utf-8")
    return re.sub(r"\{\{(\w+)\}\}", lambda match: parts[match[1]], template)  # each part inserted once, as is


def _read_text(path: str) -> str:
    try:
        return pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise AbcjaxError(f"cannot read --jsonl {path} ({error.strerror}): {_JSONL_HINT}") from None
    except UnicodeDecodeError:
        raise AbcjaxError(f"--jsonl {path} is not UTF-8 text: {_JSONL_HINT}") from None


def _tune_checks(texts: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """Each tune's entry in `abcjax evaluate`'s per-tune list, and a note for the page when there is none."""
    if not abc.parser_available():
        return [{} for _ in texts], [f"{abc.PARSER_MISSING}: the tunes' checks are not shown"]
    entries = evaluate.evaluate_tunes(list(texts))["tunes"]
    return [{key: value for key, value in entry.items() if key not in _NOT_FIELDS} for entry in entries], []


def _fields(rows: list[dict]) -> list[dict]:
    """The fields the page shows, sorts and filters by, each with its kind: "check" (booleans), "text",
    "number" or "list" (of messages); a field whose values are of several kinds, or none, is left out."""
    kinds: dict[str, set[str]] = {}
    for row in rows:
        for name, value in row.items():
            kinds.setdefault(name, set()).update([] if value is None else [_kind(value)])
    fields = [{"name": name, "kind": next(iter(found))} for name, found in kinds.items() if len(found) == 1]
    return sorted((field for field in fields if field["kind"] in _KINDS), key=lambda field: _KINDS.index(field["kind"]))


def _kind(value) -> str:
    if isinstance(value, bool):
        return "check"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "list"
    return "other"


def _tune_records(tunes: list[render.TuneFile], rows: list[dict], report: render.RenderReport) -> list[dict]:
    """Each tune as the page's script reads it: number, title, ABC text, its files, what failed, its fields."""
    files: dict[str, dict[str, str]] = {}
    for fmt, paths in report.written.items():
        for path in paths:
            name = os.path.basename(path)
            files.setdefault(name.rsplit(".", 1)[0], {})[fmt] = name
    problems: dict[int, list[dict]] = {}
    for failure in report.failures:
        problems.setdefault(failure.number, []).append({"formats": failure.formats, "message": failure.message})
    return [
        {
            "number": tune.number,
            "title": tune.title,
            "abc": tune.text,
            "files": files.get(tune.stem, {}),
            "problems": problems.get(tune.number, []),
            "values": row,
        }
        for tune, row in zip(tunes, rows, strict=True)
    ]


def _finite(value):
    """NaN and infinities as None: JSON has no such numbers."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _render_notes(report: render.RenderReport) -> list[str]:
    """What the page's reader should know about the whole book: formats not made, tunes not read."""
    notes = [f"no {fmt} files: {why}" for fmt, why in report.skipped.items()]
    if report.unread:
        listed = "; ".join(f"{where} ({why})" for where, why in report.unread[:10])
        more = f" and {len(report.unread) - 10} more" if len(report.unread) > 10 else ""
        count = f"{len(report.unread)} tune{'s' if len(report.unread) > 1 else ''}"
        notes.append(f"left out {count} that could not be read: {listed}{more}")
    return notes


def _book_header(path: str) -> str:
    """The `%` lines before each file's first tune: what `abcjax sample` says made the tunes."""
    lines = []
    for file in find_abc_files(path):
        for line in file.read_text(encoding="utf-8").removeprefix("\ufeff").splitlines():
            if line.startswith("X:"):
                break
            if line.startswith("%"):
                lines.append(line)
    return "\n".join(lines)
