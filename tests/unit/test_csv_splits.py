"""Byte-range splits of a CSV object: every line read once wherever the cuts fall, wrong field
counts kept with their reason, a quoted line break refused by name."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from churnops.csv_splits import (
    CsvLayout,
    parse_lines,
    plan_splits,
    read_layout,
    read_split,
)
from churnops.errors import ChurnOpsError

HEADER = ("id", "plan", "charges")


def parse(text: str, offset: int = 0):
    return parse_lines(text.encode(), offset, HEADER, "s3://b/k.csv")


def test_rows_are_read_with_their_line_offsets():
    parsed = parse("a1,basic,10\na2,pro,20\r\n\na3,,30\n", offset=100)
    assert parsed.raw.to_dict("list") == {
        "id": ["a1", "a2", "a3"],
        "plan": ["basic", "pro", ""],
        "charges": ["10", "20", "30"],
    }
    assert parsed.offsets.tolist() == [100, 112, 124]  # the empty line is skipped, not a row
    assert parsed.malformed_offsets == []


def test_a_trailing_delimiter_is_dropped_not_shifted_into_the_columns():
    parsed = parse("a1,basic,10,\na2,pro,20,\r\n")
    assert parsed.raw.to_dict("list") == {
        "id": ["a1", "a2"],
        "plan": ["basic", "pro"],
        "charges": ["10", "20"],
    }
    assert parsed.malformed_offsets == []


def test_wrong_field_counts_are_kept_with_their_reason_and_the_rest_is_read():
    parsed = parse('a1,basic,10\na2,pro,20,extra\na3,pro\n"a,4",basic,"1,5"\n')
    assert parsed.raw["id"].tolist() == ["a1", "a,4"]
    assert parsed.raw["charges"].tolist() == ["10", "1,5"]  # quoted delimiters are data
    assert parsed.malformed_reasons == [
        "the row has 4 fields, the header has 3",
        "the row has 2 fields, the header has 3",
    ]
    assert parsed.malformed_lines == ["a2,pro,20,extra", "a3,pro"]
    assert parsed.malformed_offsets == [12, 28]


def test_a_line_of_blanks_is_one_field_not_a_row():
    parsed = parse("a1,basic,10\n   \n")
    assert parsed.raw["id"].tolist() == ["a1"]
    assert parsed.malformed_reasons == ["the row has 1 field, the header has 3"]


def test_a_quoted_line_break_is_refused_saying_where():
    with pytest.raises(ChurnOpsError, match=r"quoted field holds a line break.*byte 12"):
        parse('a1,basic,10\na2,"two\nlines",20\n')


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"a1,basic,\xff\n", "not UTF-8 text .*offset 9"),
        (b"a1,basic,1\x00\n", "binary data"),
    ],
)
def test_file_level_problems_name_the_byte(data, message):
    with pytest.raises(ChurnOpsError, match=message):
        parse_lines(data, 0, HEADER, "s3://b/k.csv")


@pytest.fixture
def bucket(aws_env):
    from churnops.aws import client

    name = f"splits-{uuid.uuid4().hex[:10]}"
    client("s3").create_bucket(Bucket=name)
    return name


def put(bucket: str, data: bytes) -> CsvLayout:
    from churnops.aws import client

    client("s3").put_object(Bucket=bucket, Key="k.csv", Body=data)
    return read_layout(bucket, "k.csv", len(data))


def read_all(layout: CsvLayout, split_bytes: int) -> pd.DataFrame:
    frames = []
    for split in plan_splits(layout, split_bytes):
        offset, chunk = read_split(layout, split)
        assert all(
            split.start <= o < split.end
            for o in parse_lines(chunk, offset, layout.header, layout.source).offsets
        ), "a split returned a line that starts outside it"
        frames.append(parse_lines(chunk, offset, layout.header, layout.source).raw)
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("split_bytes", [1, 2, 3, 7, 11, 13, 64, 1 << 20])
def test_every_line_is_read_exactly_once_wherever_the_cuts_fall(bucket, split_bytes):
    lines = [f"c{i:03d},{'x' * (i % 17)},{i}" for i in range(60)]
    data = ("\ufeffid,plan,charges\r\n" + "\r\n".join(lines)).encode()  # BOM, CRLF, no final EOL
    layout = put(bucket, data)
    assert layout.header == HEADER
    got = read_all(layout, split_bytes)
    assert got["id"].tolist() == [f"c{i:03d}" for i in range(60)]
    assert got["plan"].tolist() == ["x" * (i % 17) for i in range(60)]


def test_a_line_longer_than_a_split_is_read_by_the_split_it_starts_in(bucket):
    data = ("id,plan,charges\n" + "a1," + "y" * 3000 + ",1\na2,basic,2\n").encode()
    layout = put(bucket, data)
    got = read_all(layout, 100)
    assert got["id"].tolist() == ["a1", "a2"]


def test_a_header_with_a_trailing_delimiter_names_the_columns(bucket):
    layout = put(bucket, b"id,plan,charges,\na1,basic,10,\n")
    assert layout.header == HEADER


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty"), (b"id,plan,charges\n", "header but no rows"), (b"\x00\x01", "binary")],
)
def test_files_that_cannot_be_read_are_refused_from_their_header(bucket, data, message):
    from churnops.aws import client

    client("s3").put_object(Bucket=bucket, Key="k.csv", Body=data)
    with pytest.raises(ChurnOpsError, match=message):
        read_layout(bucket, "k.csv", len(data))
