"""Promises of abcjax.corpus: which text becomes a tune, what is reported, what is refused."""

import pathlib
import re

import pytest

from abcjax.corpus import CorpusReport, find_abc_files, read_corpus, split_tunes
from abcjax.data import make_dataset
from abcjax.errors import AbcjaxError

BUNDLED = pathlib.Path(__file__).resolve().parents[1] / "data" / "irish.abc"

TUNE_A = "X:1\nT:A\nK:D\nABcd|"
TUNE_B = "X:2\nT:B\nK:G\nGABc|\ndefg|"


def _write(root: pathlib.Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_bundled_corpus_keeps_802_tunes_and_skips_2_cut_off_by_a_blank_line() -> None:
    # Two tunes in the file have a blank line right after K:, which ends them (ABC 2.1).
    corpus = read_corpus(str(BUNDLED))
    where = str(BUNDLED)
    assert len(corpus.tunes) == corpus.report.num_tunes == 802
    assert corpus.report.skipped == (
        (f"{where}:239", "no music"),
        (f"{where}:7182", "no music"),
    )
    assert corpus.report.num_chars == sum(len(tune) for tune in corpus.tunes) == 195_518
    assert len(set("".join(corpus.tunes))) == 83
    assert corpus.report.summary() == (
        "read 1 file: 802 tunes, 195,518 characters, 2 tunes skipped; skipped: 2 no music"
    )


def test_bundled_corpus_tunes_are_its_blank_line_separated_blocks() -> None:
    text = BUNDLED.read_text(encoding="utf-8")
    blocks = re.split(r"\n{2,}", text.rstrip("\n"))
    header_only = [block for block in blocks if block.splitlines()[-1].startswith("K:")]
    assert len(header_only) == 2
    expected = [block for block in blocks if block.startswith("X:") and block not in header_only]
    assert list(read_corpus(str(BUNDLED)).tunes) == expected


@pytest.mark.parametrize(
    "text",
    [
        "X:1\r\nT:A\r\nK:D\r\nABcd|\r\n\r\nX:2\r\nT:B\r\nK:G\r\nGABc|\r\ndefg|\r\n",
        "X:1\rT:A\rK:D\rABcd|\r\rX:2\rT:B\rK:G\rGABc|\rdefg|\r",
        "X:1 \nT:A\t\nK:D  \nABcd| \t\n \t \nX:2\nT:B \nK:G\nGABc|\t\ndefg|   ",
    ],
    ids=["crlf", "lone-cr", "trailing-blanks"],
)
def test_line_endings_and_trailing_blanks_are_normalised(text: str) -> None:
    assert split_tunes(text, "f.abc") == ([TUNE_A, TUNE_B], [])


def test_file_header_and_free_text_between_tunes_are_not_tunes() -> None:
    header = "%abc-2.1\nI:linebreak $\nA file header.\n\n"
    text = f"{header}{TUNE_A}\n\nSome notes.\nMore.\n\n{TUNE_B}\n"
    assert split_tunes(text, "f.abc") == ([TUNE_A, TUNE_B], [])


def test_comment_lines_and_directives_are_dropped_everywhere() -> None:
    text = "% top\n%%pagewidth 21cm\nX:1\n% in header\nT:A\nK:D\n%%MIDI program 1\nABcd|\n% end\n"
    assert split_tunes(text, "f.abc") == ([TUNE_A], [])


def test_comment_lines_do_not_end_a_tune_or_shift_line_numbers() -> None:
    text = "% one\n% two\nX:1\nT:A\n% gap\nK:D\n"
    assert split_tunes(text, "f.abc") == ([], [("f.abc:3", "no music")])


def test_tune_ends_at_the_next_x_line_without_a_blank_line() -> None:
    assert split_tunes(f"{TUNE_A}\n{TUNE_B}", "f.abc") == ([TUNE_A, TUNE_B], [])


def test_later_k_lines_are_key_changes_inside_the_body() -> None:
    tune = "X:1\nT:A\nK:D\nABcd|\nK:G\nGABc|"
    assert split_tunes(tune, "f.abc") == ([tune], [])


@pytest.mark.parametrize(
    ("bad_tune", "reason"),
    [
        ("X:9\nT:No key\nABcd|", "no K: header"),
        ("X:9", "no K: header"),
        ("X:9\nT:Header only\nK:D", "no music"),
        ("X:9\nT:Cut off\nK:D\n\nABcd|", "no music"),
    ],
)
def test_unusable_tune_is_skipped_with_its_reason_and_x_line(bad_tune: str, reason: str) -> None:
    text = f"header\n\n{TUNE_A}\n\n{bad_tune}\n\n{TUNE_B}\n"
    assert split_tunes(text, "f.abc") == ([TUNE_A, TUNE_B], [("f.abc:8", reason)])


def test_summary_counts_files_tunes_and_skips_per_reason() -> None:
    skipped = (("a:1", "no K: header"), ("a:5", "no music"), ("b:2", "no K: header"))
    report = CorpusReport(files=("a", "b"), num_tunes=1, num_chars=1234, skipped=skipped)
    counts = "read 2 files: 1 tune, 1,234 characters, 3 tunes skipped"
    assert report.summary() == f"{counts}; skipped: 2 no K: header, 1 no music"


def test_read_corpus_reports_files_tunes_chars_and_skips(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "f.abc"
    path.write_text(f"{TUNE_A}\n\nX:5\nT:Bad\n\n{TUNE_B}\n", encoding="utf-8")
    corpus = read_corpus(str(path))
    assert corpus.tunes == (TUNE_A, TUNE_B)
    assert corpus.report == CorpusReport(
        files=(str(path),),
        num_tunes=2,
        num_chars=len(TUNE_A) + len(TUNE_B),
        skipped=((f"{path}:6", "no K: header"),),
    )


def test_utf8_bom_is_dropped(tmp_path: pathlib.Path) -> None:
    (tmp_path / "bom.abc").write_bytes(b"\xef\xbb\xbf" + TUNE_A.encode())
    assert read_corpus(str(tmp_path / "bom.abc")).tunes == (TUNE_A,)


LATIN1_TUNE = "X:1\nT:Caf\xe9 na Gr\xe1\nK:D\nABcd|"  # a title in ISO-8859-1, as older collections have them


@pytest.mark.parametrize("declaration", ["%abc-charset iso-8859-1", "I:abc-charset ISO-8859-1", "%abc-charset latin1"])
def test_a_declared_charset_is_decoded_without_a_notice(tmp_path, capsys, declaration) -> None:
    (tmp_path / "old.abc").write_bytes(f"{declaration}\n\n{LATIN1_TUNE}\n".encode("iso-8859-1"))
    assert read_corpus(str(tmp_path / "old.abc")).tunes == (LATIN1_TUNE,)
    assert capsys.readouterr().err == ""


def test_an_undeclared_file_that_is_not_utf8_is_read_as_iso_8859_1_with_one_notice(tmp_path, capsys) -> None:
    path = tmp_path / "old.abc"
    path.write_bytes(LATIN1_TUNE.encode("iso-8859-1"))
    tunes = read_corpus(str(path)).tunes
    assert tunes == (LATIN1_TUNE,)
    notice = capsys.readouterr().err.splitlines()
    assert len(notice) == 1 and str(path) in notice[0] and "read as ISO-8859-1" in notice[0]
    assert {"é", "á"} <= set(make_dataset(tunes * 4, 4, 0.0, 0, str(path)).vocab.chars)


def test_a_declared_utf8_file_is_decoded_as_utf8(tmp_path, capsys) -> None:
    (tmp_path / "new.abc").write_bytes(f"%abc-charset utf-8\n\n{LATIN1_TUNE}\n".encode())
    assert read_corpus(str(tmp_path / "new.abc")).tunes == (LATIN1_TUNE,)
    assert capsys.readouterr().err == ""


def test_directory_means_its_abc_files_sorted_not_recursive(
    tmp_path: pathlib.Path,
) -> None:
    abc_names = [f"{letter}.abc" for letter in "fedcba"]
    _write(tmp_path, {name: b"" for name in [*abc_names, "g.txt", "sub/h.abc"]})
    assert find_abc_files(str(tmp_path)) == [tmp_path / name for name in sorted(abc_names)]


def test_comma_list_of_files_and_directories_is_read_in_order(
    tmp_path: pathlib.Path,
) -> None:
    _write(
        tmp_path,
        {
            "z.abc": TUNE_A.encode(),
            "dir/b.abc": TUNE_B.encode(),
            "dir/a.abc": TUNE_A.encode(),
        },
    )
    corpus = read_corpus(f"{tmp_path / 'z.abc'}, {tmp_path / 'dir'}")
    expected_files = [
        tmp_path / "z.abc",
        tmp_path / "dir" / "a.abc",
        tmp_path / "dir" / "b.abc",
    ]
    assert corpus.report.files == tuple(str(path) for path in expected_files)
    assert corpus.tunes == (TUNE_A, TUNE_A, TUNE_B)


@pytest.mark.parametrize(
    ("files", "spec", "key_words"),
    [
        ({}, "missing.abc", ["missing.abc", "no such file"]),
        ({}, " , ", ["no corpus path given"]),
        ({"d/notes.txt": b"X:1"}, "d", ["d", "no *.abc files"]),
        ({"d/sub.abc/x": b""}, "d", ["sub.abc", "cannot read"]),
        ({"e.abc": b""}, "e.abc", ["e.abc is empty", "at least one tune"]),
        ({"w.abc": b" \r\n\t\n\n"}, "w.abc", ["w.abc is empty", "at least one tune"]),
        (
            {"n.abc": b"Just notes.\n%X:1\n"},
            "n.abc",
            ["n.abc", "no tunes found", "X: line"],
        ),
        (
            {"u.abc": b"%abc-charset utf-8\nX:1\nT:caf\xc3\xa9\nK:D\nA\xffB|\n"},
            "u.abc",
            ["u.abc", "not valid utf-8", "byte 36", "line 5", "declares it"],
        ),
        ({"k.abc": b"%abc-charset klingon\n" + TUNE_A.encode()}, "k.abc", ["k.abc", "unknown character set"]),
        (
            {"s1.abc": b"X:1\nK:D\n", "s2.abc": b"X:2\nT:A\n\nX:3\nT:B\nK:D\n"},
            "s1.abc,s2.abc",
            ["every tune", "s1.abc, ", "s2.abc", "2 no music, 1 no K: header"],
        ),
    ],
    ids=[
        "missing",
        "no-path",
        "dir-without-abc",
        "unreadable",
        "empty",
        "whitespace-only",
        "no-tunes",
        "invalid-declared-utf8",
        "unknown-charset",
        "all-skipped",
    ],
)
def test_bad_input_raises_one_line_error_saying_what_and_where(
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, bytes],
    spec: str,
    key_words: list[str],
) -> None:
    _write(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AbcjaxError) as raised:
        read_corpus(spec)
    message = str(raised.value)
    assert "\n" not in message
    for word in key_words:
        assert word in message
