"""One CSV object read in byte-range splits, each split parsed on its own by any executor.

Why splits: a customer export can be larger than one machine's memory, and Glue adds executors
rather than driver memory. So the driver reads only the header (one ranged GET) and cuts the rest
of the object into byte ranges; every Spark task fetches its own range with boto3 (local Spark has
no s3a, and Glue runs the same code), finds its lines and parses them.

Which lines a split owns: those whose first byte lies in [start, end). A task reads from one byte
before its start and skips to the first line break, then reads past its end to finish the last
line it owns, so every line belongs to exactly one split wherever the cuts fall.

One record per line: ChurnOps reads customer files as one record per line, which is what lets a
task start in the middle of an object. A quoted field holding a line break breaks that rule, and
so does an unbalanced quote (a line with an odd number of `"`): the file is rejected saying where,
never mis-split. Every other line is read field by field (RFC 4180 quoting) and:

- has as many fields as the header: a row;
- has one more, empty, field at its end (a trailing delimiter, as spreadsheet exports write
  it): the same row, the delimiter dropped;
- otherwise: a malformed row, kept with its reason and its text (`ParsedSplit.malformed_*`),
  never shifted into the wrong columns and never sinking the rest of the file.

A file-level problem found in any split (binary data, not UTF-8, a quoted line break) raises
`ChurnOpsError` naming the byte offset.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from churnops import storage
from churnops.errors import ChurnOpsError

# The header is read from the first bytes of the object; a header longer than this is not a
# customer file (the Telco header is 300 bytes).
HEADER_BYTES = 1 << 16
# Bytes fetched per extra GET when a line runs past the end of a split.
OVERREAD_BYTES = 1 << 20
# Split size when none is asked for: big enough that a task's fixed costs (a GET, a Python
# worker, a database connection) are noise, small enough that a task's memory stays bounded
# (a split's bytes, its parsed strings and their typed copy: about 8x the split).
DEFAULT_SPLIT_BYTES = 32 << 20
MIN_SPLIT_BYTES = 1 << 20
_NL, _CR, _COMMA, _QUOTE = 10, 13, 44, 34


@dataclass(frozen=True)
class CsvLayout:
    """What the driver learns from the object's first bytes."""

    bucket: str
    key: str
    size: int
    header: tuple[str, ...]  # column names, stripped; a trailing delimiter's empty name dropped
    data_start: int  # byte offset of the first data line

    @property
    def source(self) -> str:
        return storage.s3_uri(self.bucket, self.key)


@dataclass(frozen=True)
class Split:
    index: int
    start: int
    end: int


@dataclass
class ParsedSplit:
    """The rows of one split, in file order."""

    raw: Any  # pandas DataFrame of strings, columns = the header
    offsets: npt.NDArray[np.int64]  # byte offset in the object of each row's line (int64)
    malformed_offsets: list[int] = field(default_factory=list)
    malformed_reasons: list[str] = field(default_factory=list)
    malformed_lines: list[str] = field(default_factory=list)


# ---- the driver: header and plan --------------------------------------------------------------------
def read_layout(bucket: str, key: str, size: int) -> CsvLayout:
    """Read and check the first line. Raises ChurnOpsError for a file that cannot be a CSV."""
    from churnops.dataset import read_header

    source = storage.s3_uri(bucket, key)
    head = storage.read_range(bucket, key, 0, min(size, HEADER_BYTES))
    header = read_header(head, source)  # empty, binary, not UTF-8, no delimiter
    line_end = head.find(b"\n")
    if line_end < 0 and size > len(head):
        raise ChurnOpsError(f"{source}: the first line is longer than {HEADER_BYTES} bytes")
    data_start = size if line_end < 0 else line_end + 1
    if header and header[-1] == "":
        header = header[:-1]  # a trailing delimiter on the header line
    if data_start >= size or (size <= len(head) and not head[data_start:].strip()):
        raise ChurnOpsError(f"{source}: the file has a header but no rows")
    return CsvLayout(bucket, key, size, tuple(header), data_start)


def plan_splits(layout: CsvLayout, split_bytes: int = 0, parallelism: int = 1) -> list[Split]:
    """Cut the data lines' bytes into ranges of `split_bytes`, or when that is 0, into a
    multiple of `parallelism` (the cluster's executor cores) ranges of at most
    DEFAULT_SPLIT_BYTES, so that every core has the same share to do; a file too small to be
    worth a task per core (under MIN_SPLIT_BYTES per core) is one split."""
    data = layout.size - layout.data_start
    step = split_bytes
    if step <= 0:
        count = max(1, -(-data // DEFAULT_SPLIT_BYTES))
        if parallelism > 1 and data >= parallelism * MIN_SPLIT_BYTES:
            count = -(-max(count, parallelism) // parallelism) * parallelism
        step = -(-data // count)
    step = max(1, step)
    bounds = [*range(layout.data_start, layout.size, step), layout.size]
    return [Split(i, lo, hi) for i, (lo, hi) in enumerate(itertools.pairwise(bounds))]


# ---- a task: its lines ---------------------------------------------------------------------------
def read_split(layout: CsvLayout, split: Split) -> tuple[int, bytes]:
    """The bytes of the lines `split` owns and the object offset of the first of them."""
    lo = split.start if split.start == layout.data_start else split.start - 1
    hi = min(layout.size, split.end + 4096)
    data = bytearray(storage.read_range(layout.bucket, layout.key, lo, hi))
    first = 0
    if lo != split.start:  # skip the line that started in the previous split
        while (cut := data.find(b"\n")) < 0 and hi < layout.size:
            hi = _extend(layout, data, hi)
        if cut < 0:
            return split.end, b""
        first = cut + 1
    if lo + first >= split.end:
        return split.end, b""
    while (stop := data.find(b"\n", max(first, split.end - 1 - lo))) < 0 and hi < layout.size:
        hi = _extend(layout, data, hi)
    stop = len(data) if stop < 0 else stop + 1
    return lo + first, bytes(data[first:stop])


def _extend(layout: CsvLayout, data: bytearray, hi: int) -> int:
    more = min(layout.size, hi + OVERREAD_BYTES)
    data += storage.read_range(layout.bucket, layout.key, hi, more)
    return more


# ---- a task: its rows ----------------------------------------------------------------------------
def parse_lines(
    chunk: bytes,
    offset: int,
    header: Sequence[str],
    source: str,
    *,
    distinct_columns: Sequence[str] = (),
) -> ParsedSplit:
    """Parse whole lines (bytes starting at object offset `offset`) into rows of strings.

    Columns are read as categoricals (dictionary-encoded by the reader: customer columns repeat
    a few values, and one Python string per distinct value instead of per cell halves the time
    of parsing and validating a split), except `distinct_columns` (an id: a value per row),
    read as plain strings."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    if b"\x00" in chunk:
        at = offset + chunk.index(b"\x00")
        raise ChurnOpsError(f"{source}: binary data, not a CSV file (a NUL byte at offset {at})")
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ChurnOpsError(
            f"{source}: not UTF-8 text (byte 0x{chunk[err.start]:02x} at offset "
            f"{offset + err.start})"
        ) from None
    width = len(header)
    data = np.frombuffer(chunk, dtype=np.uint8)
    breaks = np.flatnonzero(data == _NL)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(data)]))
    keep = starts < ends  # drops the empty tail after a final line break, and empty lines
    starts, ends = starts[keep], ends[keep]
    ends = ends - (data[ends - 1] == _CR)  # CRLF line ends
    keep = starts < ends
    starts, ends = starts[keep], ends[keep]

    def per_line(positions: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        counts: npt.NDArray[np.intp] = np.searchsorted(positions, ends) - np.searchsorted(
            positions, starts
        )
        return counts

    fields = per_line(np.flatnonzero(data == _COMMA)) + 1
    quotes = per_line(np.flatnonzero(data == _QUOTE))
    odd = np.flatnonzero(quotes % 2 == 1)
    if len(odd):
        at = offset + int(starts[odd[0]])
        raise ChurnOpsError(
            f"{source}: a quoted field holds a line break, or a quote is unbalanced, in the line "
            f"at byte {at}; customer files are read one record per line (export without line "
            "breaks inside fields)"
        )
    for i in np.flatnonzero(quotes):  # quoted lines: count fields as a CSV reader does
        fields[i] = len(next(csv.reader([chunk[starts[i] : ends[i]].decode("utf-8")])))
    last_empty = data[ends - 1] == _COMMA
    trailing = (fields == width + 1) & last_empty
    good = (fields == width) | trailing
    ends = ends - trailing  # drop the trailing delimiter

    parsed = ParsedSplit(raw=None, offsets=(starts[good] + offset).astype(np.int64))
    for i in np.flatnonzero(~good):
        parsed.malformed_offsets.append(offset + int(starts[i]))
        count = int(fields[i])
        parsed.malformed_reasons.append(
            f"the row has {count} field{'s' if count != 1 else ''}, the header has {width}"
        )
        parsed.malformed_lines.append(chunk[starts[i] : ends[i]].decode("utf-8"))

    if good.all() and not trailing.any():
        body = chunk  # the common case: the reader takes the bytes as they are
    else:
        body = b"\n".join(chunk[s:e] for s, e in zip(starts[good], ends[good], strict=True))
    if not len(parsed.offsets):
        parsed.raw = pd.DataFrame({name: pd.Series([], dtype=object) for name in header})
        return parsed
    names = list(header)
    table = pa_csv.read_csv(
        io.BytesIO(body),
        read_options=pa_csv.ReadOptions(
            column_names=names, use_threads=False, block_size=max(1 << 20, len(body) + 1)
        ),
        parse_options=pa_csv.ParseOptions(newlines_in_values=False),
        convert_options=pa_csv.ConvertOptions(
            column_types={
                name: pa.string()
                if name in distinct_columns
                else pa.dictionary(pa.int32(), pa.string())
                for name in names
            },
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if table.num_rows != len(parsed.offsets):  # the line scan and the CSV reader disagree: a bug
        raise ChurnOpsError(
            f"{source}: read {table.num_rows} rows from {len(parsed.offsets)} lines at byte "
            f"{offset}"
        )
    parsed.raw = table.to_pandas()
    return parsed
