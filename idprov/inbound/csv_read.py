"""Reading an import file: bytes to text lines, the delimiter, and the header.

The importer reads a file twice at most (the pre-flight, and the cells of rows
rejected late), so a file from standard input, or in an encoding whose lines are
not byte lines (UTF-16, UTF-32), is first copied into the import's private staging
directory as UTF-8. Every other encoding is decoded line by line: a line that does
not decode rejects the row it is in, naming the line, not the whole file.

The delimiter is sniffed from the header unless given. Header cells match claim
names whatever their case, with spaces or hyphens for underscores
(``Given Name`` is ``given_name``); an unknown one gets a "did you mean".
"""

from __future__ import annotations

import codecs
import difflib
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from idprov.errors import ExitCode, UsageError

RESERVED = ("username", "password", "password_hash", "roles")
DELIMITERS = (",", ";", "\t", "|")
WIDE_ENCODINGS = ("utf-16", "utf-32")
"""Encodings whose lines are not byte lines: copied to UTF-8 before reading."""


class FileError(UsageError):
    """The file as a whole cannot be imported (encoding, header, emptiness)."""

    code = "import_file"


class NothingToImport(FileError):
    """A file with a header and no rows."""

    exit_code = ExitCode.NOTHING_IMPORTED
    code = "nothing_to_import"


@dataclass
class Source:
    """The bytes to read (a file, or a private copy of standard input) and how."""

    path: Path
    name: str
    """What to call it in messages and the audit log (``-`` is "standard input")."""
    encoding: str = "utf-8"
    bytes_read: list[int] = field(default_factory=lambda: [0])
    """Bytes read so far by :func:`decoded_lines` (for the progress display)."""


def open_source(given: Path | BinaryIO, encoding: str | None, spool_dir: Path) -> Source:
    """The file ready to read: standard input and wide encodings copied to UTF-8."""
    codec = _codec(encoding) if encoding else "utf-8"
    if isinstance(given, Path):
        if not given.is_file():
            raise FileError(
                f"{given} does not exist or is not a file", hint="give a CSV file, or - for stdin"
            )
        source = Source(given, str(given), codec)
        if codec.startswith(WIDE_ENCODINGS):
            with given.open("rb") as f:
                source = _spool(f, codec, spool_dir, str(given))
        return source
    return _spool(given, codec, spool_dir, "standard input")


def _codec(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise UsageError(
            f"--encoding {encoding!r} is not an encoding Python knows",
            hint="e.g. utf-8, latin-1, cp1252, utf-16",
        ) from None


def _spool(stream: BinaryIO, codec: str, directory: Path, name: str) -> Source:
    copy = directory / "input.csv"
    with copy.open("xb") as out:
        if codec.startswith(WIDE_ENCODINGS):
            reader = codecs.getreader(codec)(stream)
            try:
                for text in iter(lambda: reader.read(1 << 20), ""):
                    out.write(text.encode("utf-8"))
            except UnicodeDecodeError as exc:
                raise FileError(f"{name} is not {codec} text: {exc.reason}") from None
            return Source(copy, name, "utf-8")
        shutil.copyfileobj(stream, out, 1 << 20)
    return Source(copy, name, codec)


def decoded_lines(source: Source, bad_lines: set[int]) -> Iterator[str]:
    """The file's lines as text, line endings kept (the csv module needs them).
    A line that does not decode is yielded with replacement characters and its
    number added to ``bad_lines``, so the row holding it is rejected, not the file."""
    with source.path.open("rb") as f:
        head = f.read(4)
        if source.encoding == "utf-8" and head.startswith(
            (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
        ):
            raise FileError(
                f"{source.name} is UTF-16 text", hint="import it with --encoding utf-16"
            )
        f.seek(3 if head.startswith(codecs.BOM_UTF8) else 0)
        for number, raw in enumerate(f, start=1):
            source.bytes_read[0] += len(raw)
            try:
                yield raw.decode(source.encoding)
            except UnicodeDecodeError:
                bad_lines.add(number)
                yield raw.decode(source.encoding, errors="replace")


def not_decodable(source: Source, line: int) -> str:
    """The message for a row whose line ``line`` did not decode."""
    return (
        f"line {line} is not {source.encoding} text; give the file's encoding with "
        "--encoding (latin-1? cp1252?)"
    )


def sniff_delimiter(header: str) -> str:
    """The delimiter the header line uses most (outside quotes); ``,`` if none."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass
class Columns:
    """The header, resolved: which cell index holds what."""

    names: list[str]
    username: int
    password: int | None
    password_hash: int | None
    roles: int | None
    claims: list[tuple[int, str]]


@dataclass(frozen=True)
class HeaderRules:
    """What the header may name: claims, renames, columns to skip, the delimiter."""

    known: set[str]
    column_map: Mapping[str, str]
    ignore_columns: frozenset[str]
    delimiter: str


def _folded(name: str) -> str:
    return name.strip().casefold().replace(" ", "_").replace("-", "_")


def read_header(cells: list[str], rules: HeaderRules) -> Columns:
    """Resolve the header cells to reserved columns and claims (see module docstring)."""
    names = [c.strip() for c in cells]
    canonical = {_folded(n): n for n in (*rules.known, *RESERVED)}
    renames = {_folded(k): v for k, v in rules.column_map.items()}
    ignored = {_folded(n) for n in rules.ignore_columns}
    mapped = [rules.column_map.get(n) or renames.get(_folded(n), n) for n in names]
    mapped = [canonical.get(_folded(m), m) for m in mapped]
    seen = _unique(names, mapped, ignored)
    unknown = [
        n
        for n, m in zip(names, mapped, strict=True)
        if m not in rules.known and m not in RESERVED and _folded(n) not in ignored
    ]
    if unknown:
        raise _unknown_columns(unknown, names, rules)
    if "username" not in seen:
        raise FileError("header: no username column", hint="add one, or --map COLUMN=username")
    claims = [
        (i, m)
        for i, (n, m) in enumerate(zip(names, mapped, strict=True))
        if m in rules.known and _folded(n) not in ignored
    ]
    index = seen.get
    return Columns(
        names, seen["username"], index("password"), index("password_hash"), index("roles"), claims
    )


def _unique(names: list[str], mapped: list[str], ignored: set[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, name in enumerate(mapped):
        if not name:
            raise FileError(f"header cell {i + 1} is empty", hint="name every column")
        if name in seen and _folded(names[i]) not in ignored:
            raise FileError(
                f"header: column {name!r} appears twice (cells {seen[name] + 1} and {i + 1})",
                hint="remove or rename one of them",
            )
        seen.setdefault(name, i)
    return seen


def _unknown_columns(unknown: list[str], names: list[str], rules: HeaderRules) -> FileError:
    other = [d for d in DELIMITERS if d != rules.delimiter and len(names) == 1 and d in names[0]]
    if other:
        shown = "\\t" if other[0] == "\t" else other[0]
        return FileError(
            f"header: unknown column {names[0]!r}: the file looks {shown!r}-separated",
            hint=f"pass --delimiter '{shown}' (or leave --delimiter out to detect it)",
        )
    candidates = sorted({*rules.known, *RESERVED})
    guesses = []
    for name in unknown:
        close = difflib.get_close_matches(_folded(name), candidates, n=1, cutoff=0.6)
        guesses += [f"{name!r}: did you mean {close[0]!r}?"] if close else []
    return FileError(
        "header: unknown column(s) " + ", ".join(repr(u) for u in unknown),
        hint=" ".join(guesses)
        + (" " if guesses else "")
        + "Map them to claims with --map COLUMN=claim, skip them with --ignore-column "
        "COLUMN, or declare the claims in the configuration; known claims: "
        + ", ".join(sorted(rules.known)),
    )
