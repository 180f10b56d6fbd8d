"""The line reader: bounded reads, over-long lines cut out, offsets true to the file."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from velostream.datasource.file import lines as file_lines
from velostream.datasource.file.lines import LineBlock, LineReader, LongLine
from velostream.errors import SourceError


def _read_all(
    path: Path, limit: int, max_lines: int, offset: int = 0, line: int = 0
) -> list[tuple[list[bytes], list[LongLine], int, int, int]]:
    """Every block from (offset, line): its lines, long lines, first line, offset after."""
    reader = LineReader(str(path), offset, line, False, limit=limit)
    out = []
    try:
        while (got := reader.read_block(max_lines, True)) is not None:
            block = bytes(got.block)
            parts = block.split(b"\n")
            if block.endswith(b"\n"):
                parts.pop()
            assert len(parts) == got.n_lines
            out.append((parts, got.long, got.first, reader.offset, reader.line))
    finally:
        reader.close()
    return out


def _expected(data: bytes, limit: int) -> tuple[list[bytes], list[int]]:
    """Lines as the reader should give them (long ones empty), and each line's end."""
    lines, ends, pos = [], [], 0
    for raw in data.split(b"\n"):
        if pos >= len(data):
            break
        pos += len(raw) + 1
        lines.append(b"" if len(raw) > limit else raw)
        ends.append(min(pos, len(data)))
    return lines, ends


@st.composite
def _files(draw: st.DrawFn) -> tuple[bytes, int, int]:
    limit = draw(st.integers(1, 40))
    sizes = draw(st.lists(st.integers(0, 3 * limit + 5), min_size=1, max_size=40))
    alphabet = st.sampled_from([b"a", b"b", b",", b"\r", b'"'])
    body = [b"".join(draw(st.lists(alphabet, min_size=n, max_size=n))) for n in sizes]
    data = b"\n".join(body) + (b"\n" if draw(st.booleans()) else b"")
    return data, limit, draw(st.integers(1, 12))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_files())
def test_blocks_offsets_and_long_lines_match_the_file(
    case: tuple[bytes, int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny reads and prefixes, so that lines and cuts straddle every read boundary.
    monkeypatch.setattr(file_lines, "_MIN_READ", 3)
    monkeypatch.setattr(file_lines, "_MAX_READ", 7)
    monkeypatch.setattr(file_lines, "_SKIP_READ", 5)
    monkeypatch.setattr(file_lines, "PREFIX_BYTES", 4)
    data, limit, max_lines = case
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    want, ends = _expected(data, limit)
    raw = data.split(b"\n")

    blocks = _read_all(path, limit, max_lines)
    got = [line for parts, *_ in blocks for line in parts]
    assert got == want
    for parts, long, first, offset, line in blocks:
        assert line == first + len(parts) and offset == ends[line - 1]
        assert [(x.line, x.size, x.prefix) for x in long] == [
            (i - first, len(raw[i]), raw[i][:4])
            for i in range(first, first + len(parts))
            if len(raw[i]) > limit
        ]
    # A restart from any position reads exactly what followed it.
    for _, _, _, offset, line in blocks[:-1]:
        again = _read_all(path, limit, max_lines, offset, line)
        assert [x for parts, *_ in again for x in parts] == want[line:]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_files(), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_a_followed_file_written_in_pieces_reads_the_same(
    case: tuple[bytes, int, int], cuts: list[int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_lines, "_MIN_READ", 3)
    monkeypatch.setattr(file_lines, "_MAX_READ", 7)
    monkeypatch.setattr(file_lines, "_SKIP_READ", 5)
    data, limit, max_lines = case
    path = tmp_path / "grow.csv"
    path.write_bytes(b"")
    reader = LineReader(str(path), 0, 0, False, limit=limit)
    got: list[bytes] = []
    sizes: list[int] = []
    ends = [min(c, len(data)) for c in sorted(cuts)] + [len(data)]
    written = 0
    try:
        for i, end in enumerate(ends):
            with path.open("ab") as f:
                f.write(data[written:end])
            written = max(written, end)
            final = i == len(ends) - 1
            while (block := reader.read_block(max_lines, final)) is not None:
                parts = bytes(block.block).split(b"\n")
                got += parts[:-1] if block.block.endswith(b"\n") else parts
                sizes += [x.size for x in block.long]
    finally:
        reader.close()
    want, _ = _expected(data, limit)
    assert got == want
    assert sizes == [len(r) for r in data.split(b"\n") if len(r) > limit]
    assert (reader.offset, reader.line) == (len(data), len(want))


def _first_block_and_peak(reader: LineReader, max_lines: int) -> tuple[LineBlock | None, int]:
    """The reader's first block and the most memory Python held while reading it."""
    tracemalloc.start()
    try:
        got = reader.read_block(max_lines, True)
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        reader.close()


def test_a_long_line_costs_a_bounded_amount_of_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("wb") as f:
        f.write(b"a,1\n" * 1000)
        f.write(b"b," + b"x" * (60 << 20) + b"\n")
        f.write(b"c,2\n" * 1000)
    reader = LineReader(str(path), 0, 0, False, limit=1 << 20)
    got, peak = _first_block_and_peak(reader, 100_000)
    assert got is not None and got.n_lines == 2001
    assert got.long == [LongLine(1000, 60 * (1 << 20) + 2, b"b," + b"x" * 1022)]
    assert reader.offset == path.stat().st_size
    assert peak < 12 << 20, f"peak {peak >> 20} MiB for a 60 MiB line"


def test_a_followed_files_long_line_is_cut_once_its_newline_is_written(tmp_path: Path) -> None:
    path = tmp_path / "grow.csv"
    path.write_bytes(b"a\nb\n" + b"x" * 50)
    reader = LineReader(str(path), 0, 0, False, limit=10)
    try:
        first = reader.read_block(100, False)
        assert first is not None and bytes(first.block) == b"a\nb\n" and first.long == []
        assert (reader.offset, reader.line) == (4, 2)
        with path.open("ab") as f:
            f.write(b"y" * 50)
        assert reader.read_block(100, False) is None
        assert (reader.offset, reader.line) == (4, 2)  # a position here re-reads the line
        with path.open("ab") as f:
            f.write(b"z\nc\n")
        second = reader.read_block(100, False)
        assert second is not None and bytes(second.block) == b"\nc\n"
        line = b"x" * 50 + b"y" * 50 + b"z"
        assert second.long == [LongLine(0, len(line), line)]
        assert (reader.offset, reader.line) == (4 + len(line) + 3, 4)
    finally:
        reader.close()


def test_a_long_header_is_a_source_error(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes(b"h" * 100 + b"\n1\n")
    reader = LineReader(str(path), 0, 0, True, limit=10)
    with pytest.raises(SourceError, match=r"header line .* has 100 bytes, more than max\.record"):
        reader.read_block(10, True)
    reader.close()


def test_a_long_first_line_after_a_bom_is_cut_and_the_next_lines_read(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + b"x" * 30 + b"\n1\n2")
    reader = LineReader(str(path), 0, 0, False, limit=10)
    got = reader.read_block(10, True)
    reader.close()
    assert got is not None and bytes(got.block) == b"\n1\n2" and got.n_lines == 3
    assert got.long == [LongLine(0, 33, b"\xef\xbb\xbf" + b"x" * 30)]
    assert reader.offset == 33 + 1 + 2 + 1


def test_head_leaves_long_lines_out(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(b"a\n" + b"x" * 100 + b"\nb\n" + b"y" * 100)
    reader = LineReader(str(path), 0, 0, False, limit=10)
    assert reader.head(1 << 20) == b"a\n\nb\n\n"
    reader.close()


@pytest.mark.parametrize("char", ["é", "€", "𝄞"])
@pytest.mark.parametrize("ascii", [1020, 1021, 1022, 1023])
def test_a_kept_prefix_does_not_end_inside_a_character(
    tmp_path: Path, char: str, ascii: int
) -> None:
    path = tmp_path / "u.csv"
    line = ("a" * ascii + char * 2000).encode()
    path.write_bytes(line + b"\n1\n")
    reader = LineReader(str(path), 0, 0, False, limit=3000)
    got = reader.read_block(10, True)
    reader.close()
    assert got is not None
    [long] = got.long
    width = len(char.encode())
    whole = (1024 - ascii) // width
    assert long.size == len(line) and long.prefix == ("a" * ascii + char * whole).encode()


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), start=st.integers(0, 320), end=st.integers(0, 320))
def test_newlines_counted_in_runs_match_bytes_count(data: bytes, start: int, end: int) -> None:
    with pytest.MonkeyPatch.context() as patch:  # runs of 7 bytes, numpy from 5 bytes on
        patch.setattr(file_lines, "_NUMPY_COUNT", 5)
        patch.setattr(file_lines, "_COUNT_RUN", 7)
        start = min(start, len(data))
        assert file_lines.newlines(bytearray(data), start, end) == data.count(b"\n", start, end)


def test_a_regular_files_blocks_are_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 9 blocks of some 8.6 MB (200,000 lines of 43 bytes): one read each once the mean
    # line length is known, not reads of a few MB appended to one another.
    path = tmp_path / "trades.csv"
    line = b"1234567,MLSD,114.81,538,2024-01-15 09:30:00\n"
    path.write_bytes(line * 1_800_000)
    reads: list[int] = []
    read = LineReader._read

    def counted(self: LineReader, buf: bytearray, want: int) -> tuple[bytearray, int]:
        buf, got = read(self, buf, want)
        reads.append(got)
        return buf, got

    monkeypatch.setattr(LineReader, "_read", counted)
    blocks = _read_all(path, 1 << 20, 200_000)
    assert [len(parts) for parts, *_ in blocks] == [200_000] * 9
    assert len([n for n in reads if n]) <= 9 + 2, reads


def test_the_last_read_of_a_file_is_sized_by_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_bytes(b"a,1\n" * 10_000)  # 40 KB, asked for a million lines
    reader = LineReader(str(path), 0, 0, False, limit=1 << 20)
    got, peak = _first_block_and_peak(reader, 1_000_000)
    assert got is not None and got.n_lines == 10_000
    assert peak < 1 << 20, f"peak {peak >> 10} KiB to read 40 KB"
