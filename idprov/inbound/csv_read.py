"""Reading an import file: bytes to text lines, the delimiter, and the header.

The importer reads a file twice at most (the pre-flight, and the cells of rows
rejected late), so a file from standard input, or in an encoding whose lines are
not byte lines (UTF-16, UTF-32), is first copied into the import's private staging
directory as UTF-8. Every other encoding is decoded line by line: a line that does
not decode rejects the row it is in, naming the line, not the whole file.

The delimiter is sniffed from the header unless given. Header cells match claim
names whatever their case, spaces, hyphens and underscores (``Given Name`` is
``given_name``, ``E-Mail`` is ``email``); an unknown one gets a "did you mean".
"""

from __future__ import annotations

import codecs
import itertools
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from idprov.errors import ExitCode, NotFoundError, UsageError, from_os_error
from idprov.spelling import closest

RESERVED = ("username", "password", "password_hash", "roles")
"""Columns that are not claims (their names are among config.claims.RESERVED_CLAIM_NAMES)."""
DELIMITERS = (",", ";", "\t", "|")
FIELD_LIMIT = 1 << 20
"""The most characters one cell may hold (1 MiB); the csv module's limit."""
WIDE_ENCODINGS = ("utf-16", "utf-32")
"""Encodings whose lines are not byte lines: copied to UTF-8 before reading."""


class FileError(UsageError):
    """The file as a whole cannot be imported (encoding, header, emptiness)."""

    code = "import_file"


class NothingToImport(FileError):
    """A file with no rows: empty, or a header alone."""

    exit_code = ExitCode.NOTHING_IMPORTED
    code = "nothing_to_import"


class BrokenFile(FileError):
    """A file that is not valid CSV, or not text in its encoding, past some point:
    what follows cannot be read reliably, so nothing of it is imported."""

    exit_code = ExitCode.NOTHING_IMPORTED
    code = "bad_file"


@dataclass
class Source:
    """The bytes to read (a file, or a private copy of standard input) and how."""

    path: Path
    name: str
    """What to call it in messages and the audit log (``-`` is "standard input")."""
    encoding: str = "utf-8"
    bytes_read: list[int] = field(default_factory=lambda: [0])
    """Bytes read so far by :func:`decoded_lines` (for the progress display)."""


def check_input(given: Path) -> None:
    """Refuse, before anything is done, a path that is not a regular file."""
    try:
        mode = given.stat().st_mode
    except FileNotFoundError:
        raise NotFoundError(
            f"{given} does not exist", hint="check the path, or give - to read standard input"
        ) from None
    except OSError as exc:
        raise from_os_error(exc, "read the CSV file") from None
    if stat.S_ISDIR(mode):
        raise FileError(
            f"{given} is a directory", hint="name a CSV file in it, or - to read standard input"
        )
    if not stat.S_ISREG(mode):
        raise FileError(
            f"{given} is not a regular file (a pipe or a device)",
            hint=f"send it to standard input instead: idprov import users - < {given}",
        )


def open_source(given: Path | BinaryIO, encoding: str | None, spool_dir: Path) -> Source:
    """The file ready to read: standard input and wide encodings copied to UTF-8."""
    codec = _codec(encoding) if encoding else "utf-8"
    if isinstance(given, Path):
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
            _transcode(_chunks(stream), codec, out, name)
            return Source(copy, name, "utf-8")
        for chunk in _chunks(stream):
            out.write(chunk)
    return Source(copy, name, codec)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's bytes as they come: one read at a time, so that at a terminal one
    Ctrl-D ends the input (a buffered read of a fixed size waits for a second one)."""
    read = getattr(stream, "read1", stream.read)
    while chunk := read(1 << 20):
        yield chunk


def _transcode(chunks: Iterator[bytes], codec: str, out: BinaryIO, name: str) -> None:
    """Write ``chunks`` of ``codec`` text as UTF-8; a byte sequence that does not
    decode, or a file that ends inside a character, is refused naming its offset."""
    head = b""
    for chunk in chunks:  # at a terminal a read may be a byte: enough to see the BOM
        head += chunk
        if len(head) >= 4:
            break
    codec = _byte_order(name, codec, head)
    decoder = codecs.getincrementaldecoder(codec)()
    offset = lines = 0  # bytes given to the decoder, line breaks written
    for chunk in itertools.chain([head] if head else [], chunks, [b""]):
        state = decoder.getstate()
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:  # its offsets count the bytes held back too
            held = len(state[0])
            decoder.setstate(state)
            good = decoder.decode(chunk[: max(exc.start - held, 0)])
            at = offset - held + exc.start
            raise _undecodable(name, codec, exc, at, lines + good.count("\n") + 1) from None
        except UnicodeError as exc:  # not a decoding error of some bytes: the file's
            raise BrokenFile(f"{name}: not {codec} text ({exc})", hint=_GIVE_ENCODING) from None
        offset += len(chunk)
        lines += text.count("\n")
        out.write(text.encode("utf-8"))


_GIVE_ENCODING = "give the file's encoding with --encoding, or export it again"


def _byte_order(name: str, codec: str, head: bytes) -> str:
    """The codec to decode a file given as ``codec`` with, by its first bytes ``head``.
    utf-16 and utf-32 (no byte order named) need a byte order mark: Python's decoder
    fails without one ("UTF-16 stream does not start with BOM"). Without it the byte
    order is read off the NUL bytes of the ASCII header, as for a file read as UTF-8;
    a UTF-8 file, or one whose order does not show, is refused saying what to give."""
    if codec not in WIDE_ENCODINGS or not head:
        return codec
    marked = next(((what, wide) for bom, what, wide in _WIDE_BOMS if head.startswith(bom)), None)
    if marked is not None and marked[1] == codec:
        return codec
    if marked is not None:  # the longer mark first: UTF-32 LE's begins with UTF-16 LE's
        raise BrokenFile(
            f"{name} starts with a {marked[0]} byte order mark: it is {marked[0]} text, not "
            f"{codec} as --encoding says",
            hint=f"import it with --encoding {marked[1]}",
        )
    if head.startswith(codecs.BOM_UTF8):
        raise BrokenFile(
            f'{name} starts with a UTF-8 byte order mark (Excel\'s "CSV UTF-8"): '
            f"it is UTF-8 text, not {codec} as --encoding says",
            hint="drop --encoding",
        )
    guess = _byte_order_guess(head)
    if guess is not None and guess[1].startswith(codec):
        return guess[1]
    hint = (
        f"import it with --encoding {guess[1]}"
        if guess is not None
        else f'give its byte order: --encoding {codec}-le (Windows, Excel\'s "Unicode Text") '
        f"or --encoding {codec}-be, or the file's own encoding if it is not {codec}"
    )
    what = f"looks like {guess[0]} text" if guess is not None else "does not show its byte order"
    raise BrokenFile(f"{name} has no {codec.upper()} byte order mark and {what}", hint=hint)


def _undecodable(
    name: str, codec: str, exc: UnicodeDecodeError, offset: int, line: int
) -> BrokenFile:
    where = f"{name}: byte {offset:,} (line {line})"
    if exc.reason == "truncated data":
        return BrokenFile(
            f"{where}: the file ends inside a {codec} character: it was cut short",
            hint="copy or export the file again",
        )
    return BrokenFile(
        f"{where}: not {codec} text ({exc.reason})",
        hint=_GIVE_ENCODING,
    )


_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32", "utf-32"),
    (codecs.BOM_UTF32_BE, "UTF-32", "utf-32"),
    (codecs.BOM_UTF16_LE, "UTF-16", "utf-16"),
    (codecs.BOM_UTF16_BE, "UTF-16", "utf-16"),
)
"""Byte order marks of the wide encodings, the longer first (UTF-32 LE's begins with
UTF-16 LE's)."""
_WITHOUT_BOM = {
    (False, True, True, True): ("UTF-32 (little-endian)", "utf-32-le"),
    (True, True, True, False): ("UTF-32 (big-endian)", "utf-32-be"),
    (False, True): ("UTF-16 (little-endian)", "utf-16-le"),
    (True, False): ("UTF-16 (big-endian)", "utf-16-be"),
}
"""Which bytes of the first characters are zero, in wide text without a BOM (an
ASCII header: a CSV's first bytes are never NUL in UTF-8)."""


def _wide_text(name: str, head: bytes) -> BrokenFile | None:
    """The error for a file whose first bytes show a wide encoding, or None: a file not
    readable as given, as one that does not decode in the encoding given is."""
    for bom, what, codec in _WIDE_BOMS:
        if head.startswith(bom):
            return BrokenFile(f"{name} is {what} text", hint=f"import it with --encoding {codec}")
    guess = _byte_order_guess(head)
    if guess is None:
        return None
    return BrokenFile(
        f"{name} looks like {guess[0]} text without a byte order mark",
        hint=f"import it with --encoding {guess[1]}",
    )


def _byte_order_guess(head: bytes) -> tuple[str, str] | None:
    """(what, codec) of wide text without a BOM whose first bytes are ``head``, or None."""
    return _WITHOUT_BOM.get(tuple(b == 0 for b in head[:4])) or _WITHOUT_BOM.get(
        tuple(b == 0 for b in head[:2])
    )


def decoded_lines(source: Source, bad_lines: set[int]) -> Iterator[str]:
    """The file's lines as text, line endings kept (the csv module needs them).
    A line that does not decode is yielded with replacement characters and its
    number added to ``bad_lines``, so the row holding it is rejected, not the file."""
    with source.path.open("rb") as f:
        head = f.read(4)
        if source.encoding == "utf-8" and (wide := _wide_text(source.name, head)):
            raise wide
        f.seek(3 if head.startswith(codecs.BOM_UTF8) else 0)
        for number, raw in enumerate(f, start=1):
            source.bytes_read[0] += len(raw)
            try:
                yield raw.decode(source.encoding)
            except UnicodeDecodeError:
                bad_lines.add(number)
                yield raw.decode(source.encoding, errors="replace")


def not_decodable(source: Source, line: int, first: int) -> str:
    """The message for the row of line ``first`` whose line ``line`` did not decode
    (the report names ``first`` already)."""
    where = "is" if line == first else f"has line {line}, which is"
    hint = (
        "give the file's encoding with --encoding (Excel's \"CSV\" on Windows is cp1252)"
        if source.encoding == "utf-8"
        else "give the file's encoding with --encoding"
    )
    return f"{where} not {source.encoding} text; {hint}"


def bom_wins(source: Source) -> tuple[Source, str | None]:
    """``source`` read as UTF-8 if it starts with a UTF-8 byte order mark while another
    single-byte encoding was asked for (a cron job written for a cp1252 export, and HR
    now saves "CSV UTF-8"): the mark proves UTF-8 (read as cp1252, José became JosÃ©
    and was pushed so), and a note that says so; else ``source`` as it is."""
    if source.encoding.startswith(("utf-8", "utf_8")) or source.encoding.startswith(WIDE_ENCODINGS):
        return source, None
    with source.path.open("rb") as f:
        if f.read(3) != codecs.BOM_UTF8:
            return source, None
    note = (
        f'{source.name} starts with a UTF-8 byte order mark (Excel\'s "CSV UTF-8"): read as '
        f"UTF-8, not {source.encoding} as --encoding says (drop --encoding)"
    )
    return Source(source.path, source.name, "utf-8", source.bytes_read), note


def not_csv(name: str, error: Exception, first: int, line: int) -> BrokenFile:
    """The error for a CSV syntax error in the row that starts on line ``first``, found
    on line ``line``. The reader cannot tell where that row really ends (inside a
    quoted cell, a line is not a row), so the import stops: nothing is written."""
    text = str(error)
    row = f" (in the row that starts on line {first})" if first != line else ""
    stop = "; nothing was imported"
    if text.startswith("field larger than field limit"):
        return BrokenFile(
            f"{name}:{first}: a cell is longer than {FIELD_LIMIT:,} characters, the most one "
            f"may hold{stop}",
            hint='if the cell is not meant to be that long, a quote (") opens it that is not '
            'closed where it should be: close it, or write a quote inside a cell as ""',
        )
    if text == "unexpected end of data":
        return BrokenFile(
            f"{name}:{first}: a quoted cell that starts in this row is never closed: the file "
            f"ends inside it{f' (line {line})' if line != first else ''}{stop}",
            hint='close the quote (") where the cell ends; a quote inside a cell is written ""',
        )
    if text.startswith("new-line character seen in unquoted field"):
        return BrokenFile(
            f"{name}:{line}: a carriage return (CR) that does not end a line, outside quotes"
            f"{row}: old Mac line endings, or a stray CR in a cell{stop}",
            hint="convert the line endings to LF or CRLF (e.g. tr '\\r' '\\n' < "
            f"{name if name != 'standard input' else 'FILE'} > fixed.csv, or save it as "
            "'CSV UTF-8'), or quote the cell that holds the CR",
        )
    if text.endswith("expected after '\"'"):
        return BrokenFile(
            f'{name}:{line}: a quote (") inside a quoted cell is not doubled{row}{stop}',
            hint='write a quote inside a quoted cell as "" ("Note ""quoted"" text"), or take '
            "the quotes off a cell that has no delimiter, quote or line break in it",
        )
    return BrokenFile(f"{name}:{line}: not valid CSV{row}: {text}{stop}")


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
    notes: list[str] = field(default_factory=list)
    """What the reader decided about the header on its own (columns it skips)."""


@dataclass(frozen=True)
class HeaderRules:
    """What the header may name: claims, renames, columns to skip, the delimiter."""

    known: set[str]
    column_map: Mapping[str, str]
    ignore_columns: frozenset[str]
    delimiter: str


REJECTS_COLUMNS = ("line", "error")
"""The columns a rejects file adds after the header (see ``--rejects``)."""


def _folded(name: str) -> str:
    """A header cell as it is matched: case, spaces, hyphens and underscores aside
    (``E-Mail`` is ``email``, ``Given Name`` is ``given_name``)."""
    return "".join(c for c in name.strip().casefold() if c not in " \t_-")


def read_header(cells: list[str], rules: HeaderRules) -> Columns:
    """Resolve the header cells to reserved columns and claims (see module docstring)."""
    names = [c.strip() for c in cells]
    canonical = {_folded(n): n for n in (*rules.known, *RESERVED)}
    _check_options(names, rules, canonical)
    renames = {_folded(k): v for k, v in rules.column_map.items()}
    ignored = {_folded(n) for n in rules.ignore_columns}
    notes = _rejects_columns(names, canonical, renames, ignored)
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
        names,
        seen["username"],
        index("password"),
        index("password_hash"),
        index("roles"),
        claims,
        notes,
    )


def _check_options(names: list[str], rules: HeaderRules, canonical: dict[str, str]) -> None:
    """Every --map names a column of the header and a claim; every --ignore-column a
    column of the header."""
    for column, claim in rules.column_map.items():
        option = f"--map {column}={claim}"
        if _folded(claim) not in canonical:
            raise UsageError(
                f"{option}: unknown claim {claim!r}",
                hint=_did_you_mean(claim, sorted(canonical.values()))
                + "Known claims: "
                + ", ".join(sorted(rules.known))
                + ", and username, password, password_hash, roles",
            )
        _in_header(option, column, names)
    for column in sorted(rules.ignore_columns):
        _in_header(f"--ignore-column {column}", column, names)


def _in_header(option: str, column: str, names: list[str]) -> None:
    if _folded(column) not in {_folded(n) for n in names}:
        raise UsageError(
            f"{option}: the header has no column {column!r}",
            hint=_did_you_mean(column, names)
            + "The header's columns: "
            + ", ".join(repr(n) for n in names),
        )


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = _closest(name, candidates)
    return f"did you mean {close!r}? " if close else ""


def _closest(name: str, candidates: list[str]) -> str | None:
    """The candidate ``name`` is most likely a typo of, if one is close."""
    return closest(name, candidates, _folded)


def _rejects_columns(
    names: list[str], canonical: dict[str, str], renames: dict[str, str], ignored: set[str]
) -> list[str]:
    """A rejects file's own last columns (``line``, ``error``), skipped when no claim
    or option claims those names: fixing a rejects file and importing it just works.
    Adds them to ``ignored``; returns the note saying so."""
    last = tuple(_folded(n) for n in names[-len(REJECTS_COLUMNS) :])
    if last != REJECTS_COLUMNS or any(n in canonical or n in renames or n in ignored for n in last):
        return []
    ignored.update(REJECTS_COLUMNS)
    return ["the last columns, 'line' and 'error', are a rejects file's: not imported"]


def _unique(names: list[str], mapped: list[str], ignored: set[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, name in enumerate(mapped):
        if not name:
            raise FileError(f"header cell {i + 1} is empty", hint="name every column")
        if name in seen and _folded(names[i]) not in ignored:
            first = names[seen[name]]
            said = (
                f"column {name!r} appears twice"
                if first == names[i] == name
                else f"columns {first!r} and {names[i]!r} are both {name!r}"
            )
            raise FileError(
                f"header: {said} (cells {seen[name] + 1} and {i + 1})",
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
    guesses = [
        f"{name!r}: did you mean {close!r}?"
        for name in unknown
        if (close := _closest(name, candidates))
    ]
    return FileError(
        "header: unknown column(s) " + ", ".join(repr(u) for u in unknown),
        hint=" ".join(guesses)
        + (" " if guesses else "")
        + "Map them to claims with --map COLUMN=claim, skip them with --ignore-column "
        "COLUMN, or declare the claims in the configuration; known claims: "
        + ", ".join(sorted(rules.known)),
    )
