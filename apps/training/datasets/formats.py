"""Tell a file's format from its name and first bytes, and a dataset's from its files'.

The extension proposes, the content decides: a ``.parquet`` file must start with the
Parquet magic, a ``.jsonl`` file's first record must be JSON, and anything else is text
only when its first bytes decode as text. Empty files and names starting with ``.`` or
``_`` (``_SUCCESS``, ``.gitattributes``) do not count towards the dataset's format.
"""

import json

TEXT = "text"
JSONL = "jsonl"
CSV = "csv"
PARQUET = "parquet"
MIXED = "mixed"
UNKNOWN = "unknown"

PARQUET_MAGIC = b"PAR1"
PARQUET_EXTENSIONS = (".parquet", ".pq")
JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json")
CSV_EXTENSIONS = (".csv", ".tsv")
TEXT_EXTENSIONS = (".txt", ".text", ".md", ".log")
# Share of printable bytes above which a file that is not UTF-8 still reads as text.
PRINTABLE_SHARE = 0.95


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def head_text(head: bytes, *, whole: bool) -> str | None:
    """The first bytes of a file as text, or None when they look binary.

    ``whole`` says whether ``head`` is the entire file (else a character may be cut at
    its end).
    """
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as error:
        if not whole and error.start >= len(head) - 3:
            return head[: error.start].decode("utf-8", "replace")
    printable = sum(1 for byte in head if byte >= 0x20 or byte in b"\t\n\r\f")
    return head.decode("latin-1") if printable >= PRINTABLE_SHARE * len(head) else None


def _first_record_is_json(text: str, *, whole: bool) -> bool | None:
    """Whether the first non-blank line is a JSON object or array; None when that line is
    cut off by the end of the sample but starts like one."""
    line, newline, _ = text.lstrip().partition("\n")
    line = line.strip()
    if not line:
        return False
    if not newline and not whole:
        return None if line.startswith(("{", "[")) else False
    try:
        return isinstance(json.loads(line), dict | list)
    except ValueError:
        return False


def file_format(relative: str, head: bytes, size: int) -> str | None:
    """The format of one file, or None when it does not count (empty, hidden, a marker)."""
    name = relative.rsplit("/", 1)[-1]
    if size == 0 or name.startswith((".", "_")):
        return None
    extension = _extension(name)
    if head.startswith(PARQUET_MAGIC):
        return PARQUET
    whole = size <= len(head)
    text = None if extension in PARQUET_EXTENSIONS else head_text(head, whole=whole)
    if text is None:
        return UNKNOWN
    if extension in CSV_EXTENSIONS:
        return CSV
    if extension in TEXT_EXTENSIONS:
        return TEXT
    is_json = _first_record_is_json(text, whole=whole)
    if is_json or (is_json is None and extension in JSONL_EXTENSIONS):
        return JSONL
    return TEXT


def main_format(bytes_by_format: dict[str, int]) -> tuple[str, str | None]:
    """The dataset's format (``mixed`` when its files differ) and the format to preview: the
    known format holding the most bytes, None when there is none."""
    if not bytes_by_format:
        return UNKNOWN, None
    overall = next(iter(bytes_by_format)) if len(bytes_by_format) == 1 else MIXED
    known = {fmt: size for fmt, size in bytes_by_format.items() if fmt != UNKNOWN}
    shown = max(known, key=lambda fmt: (known[fmt], fmt)) if known else None
    return overall, shown
