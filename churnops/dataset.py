"""Reading customer CSV files with file-level checks shared by the CLI and the Glue job.

A file-level problem (not UTF-8, empty, header only, wrong or duplicate columns) raises
`ChurnOpsError` with a one-line reason; row-level problems are the contract's business.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from churnops.contract import Contract
from churnops.errors import ChurnOpsError


def read_header(data: bytes, source: str) -> list[str]:
    """Decode and parse the first line; raise a one-line error if the file cannot be a CSV."""
    if not data.strip():
        raise ChurnOpsError(f"{source}: the file is empty")
    try:
        first = data[: 1 << 16].decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # A multi-byte character cut at the 64 KiB boundary is not an encoding problem.
        if err.start < (1 << 16) - 4:
            raise ChurnOpsError(
                f"{source}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
            ) from None
        first = data[: err.start].decode("utf-8-sig")
    if "\x00" in first:
        raise ChurnOpsError(f"{source}: binary data, not a CSV file")
    line = first.splitlines()[0] if first.splitlines() else ""
    header = next(csv.reader([line]), [])
    if len(header) < 2:
        raise ChurnOpsError(f"{source}: no comma-separated header line found")
    return [h.strip() for h in header]


def parse_customers(
    data: bytes, contract: Contract, source: str, *, target_required: bool = True
) -> pd.DataFrame:
    """Parse CSV bytes into a DataFrame of raw strings after the file-level checks."""
    header = read_header(data, source)
    problems = contract.check_header(header, target_required=target_required)
    if problems:
        raise ChurnOpsError(f"{source}: {problems.describe()}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ChurnOpsError(
            f"{source}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
        ) from None
    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=False
        )
    except pd.errors.ParserError as err:
        raise ChurnOpsError(
            f"{source}: malformed CSV ({str(err).strip().splitlines()[-1]})"
        ) from None
    frame.columns = [c.strip() for c in frame.columns]
    if frame.empty:
        raise ChurnOpsError(f"{source}: the file has a header but no rows")
    return frame


def read_customers(
    path: str | Path, contract: Contract, *, target_required: bool = True
) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ChurnOpsError(f"{path}: no such file")
    if path.is_dir():
        raise ChurnOpsError(f"{path}: is a directory, expected a CSV file")
    return parse_customers(path.read_bytes(), contract, str(path), target_required=target_required)
