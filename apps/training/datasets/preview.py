"""The first records of a file as a small table: ``{"columns": [...], "rows": [[...]]}``.

Text gives one ``line`` column; JSON lines give the keys of their objects; CSV gives its
header; Parquet gives its schema (with ``types`` and ``total_rows``) and reads only the
first rows. Reading is bounded: long lines are cut, at most ``MAX_READ_CHARS`` of a text
file are read, and cells are cut to ``MAX_CELL_CHARS``. Cells are JSON scalars that any
database stores (no NaN, no NUL). A file that does not parse as its format still gets a
table of what did, with the reason in ``problem``.
"""

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apps.training.datasets.formats import CSV, JSONL, PARQUET, TEXT

PREVIEW_ROWS = 20
MAX_COLUMNS = 50
MAX_CELL_CHARS = 200
MAX_LINE_CHARS = 64 * 1024
MAX_READ_CHARS = 4 * 1024 * 1024
LINE_ENDS = ("\n", "\r")
CSV_DELIMITERS = ",;\t|"

Cell = str | int | float | bool | None


def storable(text: str) -> str:
    """``text`` without what databases refuse: NUL, and lone surrogates (file names that
    are not UTF-8 decode to those)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _cut(text: str, limit: int = MAX_CELL_CHARS) -> str:
    text = storable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(value: Any) -> Cell:
    """``value`` as a short JSON scalar."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict | list | tuple):
        return _cut(json.dumps(value, ensure_ascii=False, default=str))
    return _cut(str(value))


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, each cut to ``MAX_LINE_CHARS``, until ``MAX_READ_CHARS`` are read."""
    with open(path, encoding="utf-8", errors="replace", newline="") as source:
        read = 0
        while read < MAX_READ_CHARS:
            line = source.readline(MAX_LINE_CHARS)
            if not line:
                return
            read += len(line)
            rest = line
            while not rest.endswith(LINE_ENDS) and read < MAX_READ_CHARS:
                rest = source.readline(MAX_LINE_CHARS)
                if not rest:
                    break
                read += len(rest)
            yield line


def text_preview(path: Path) -> dict[str, Any]:
    rows: list[list[Cell]] = []
    for line in _lines(path):
        rows.append([_cut(line.rstrip("\r\n"))])
        if len(rows) == PREVIEW_ROWS:
            break
    return {"columns": ["line"], "rows": rows}


def jsonl_preview(path: Path) -> dict[str, Any]:
    records: list[dict[str, Any]] = []
    problem = ""
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            problem = f"Line {number} is not valid JSON."
            break
        records.append(value if isinstance(value, dict) else {"value": value})
        if len(records) == PREVIEW_ROWS:
            break
    columns: list[str] = []
    for record in records:
        columns += [str(key) for key in record if str(key) not in columns]
    columns = columns[:MAX_COLUMNS]
    rows = [[cell(record.get(column)) for column in columns] for record in records]
    preview: dict[str, Any] = {"columns": [_cut(c) for c in columns], "rows": rows}
    if problem:
        preview["problem"] = problem
    return preview


def _dialect(sample: str, path: Path) -> type[csv.Dialect] | csv.Dialect:
    if path.suffix.lower() == ".tsv":
        return csv.excel_tab
    try:
        return csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS)
    except csv.Error:
        return csv.excel


def csv_preview(path: Path) -> dict[str, Any]:
    lines = list(_head_lines(path))
    reader = csv.reader(lines, _dialect("".join(lines[:50]), path))
    problem = ""
    records: list[list[str]] = []
    try:
        for record in reader:
            if record:
                records.append(record)
            if len(records) > PREVIEW_ROWS:
                break
    except csv.Error as error:
        problem = f"Line {reader.line_num}: {error}."
    if not records:
        return {"columns": [], "rows": [], **({"problem": problem} if problem else {})}
    header, body = records[0][:MAX_COLUMNS], records[1:]
    width = min(max(len(header), *(len(r) for r in body)) if body else len(header), MAX_COLUMNS)
    columns = [_cut(name) or f"column {i + 1}" for i, name in enumerate(header)]
    columns += [f"column {i + 1}" for i in range(len(columns), width)]
    rows = [[cell(r[i]) if i < len(r) else None for i in range(width)] for r in body]
    preview: dict[str, Any] = {"columns": columns, "rows": rows}
    if problem:
        preview["problem"] = problem
    return preview


def _head_lines(path: Path) -> Iterator[str]:
    """Enough lines for the header and ``PREVIEW_ROWS`` records (quoted fields may span
    lines, so a few more)."""
    for count, line in enumerate(_lines(path)):
        if count > 4 * PREVIEW_ROWS + 1:
            return
        yield line


def parquet_preview(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq  # heavy: imported by the scans that need it

    with pq.ParquetFile(path) as parquet:
        fields = list(parquet.schema_arrow)[:MAX_COLUMNS]
        columns = [field.name for field in fields]
        total = parquet.metadata.num_rows
        rows: list[list[Cell]] = []
        if total and columns:
            batch = next(parquet.iter_batches(batch_size=PREVIEW_ROWS, columns=columns), None)
            if batch is not None:
                data = [column.to_pylist() for column in batch.columns]
                rows = [[cell(values[i]) for values in data] for i in range(batch.num_rows)]
    return {
        "columns": [_cut(name) for name in columns],
        "types": [_cut(str(field.type)) for field in fields],
        "rows": rows,
        "total_rows": total,
    }


READERS = {TEXT: text_preview, JSONL: jsonl_preview, CSV: csv_preview, PARQUET: parquet_preview}


def preview_read(path: Path, fmt: str) -> dict[str, Any]:
    """The first records of the file at ``path`` read as ``fmt``, with ``format`` set.

    A file that cannot be parsed gives an empty table and the reason in ``problem``.
    """
    try:
        table = READERS[fmt](path)
    except (OSError, ValueError, csv.Error) as error:
        table = {"columns": [], "rows": [], "problem": _cut(f"Not readable as {fmt}: {error}", 300)}
    return {"format": fmt, **table}
