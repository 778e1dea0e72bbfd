"""Where idprov looks for its configuration and keeps its data (XDG base directories)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

CONFIG_FILENAME = "idprov.yaml"


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "idprov"


def user_data_dir() -> Path:
    """``$IDPROV_DATA_DIR``; else ``$STATE_DIRECTORY`` (what systemd's
    ``StateDirectory=`` creates, the first if it names several); else XDG's."""
    explicit = os.environ.get("IDPROV_DATA_DIR")
    if explicit:
        return Path(explicit)
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "idprov"


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and return it: it and every missing directory above it get mode
    0700, whatever the umask (``mkdir -p`` gives the parents ``0777 & ~umask``: with
    umask 000 another local user could rename a world-writable parent away and plant
    their own directory and database). Directories that exist keep their mode."""
    missing: list[Path] = []
    current = path
    while not current.is_dir() and current.parent != current:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if directory.is_dir():  # made meanwhile by another process
                continue
            raise
        os.chmod(directory, 0o700)
    return path


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (never widens a mode)."""
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def open_private_output(path: Path, overwrite: bool = False) -> TextIO:
    """Open a new file for user data: mode 0600 (also when it replaces a file), in a
    directory that must exist already, refusing an existing file unless ``overwrite``."""
    from idprov.errors import ConflictError, NotFoundError

    if not path.parent.is_dir():
        raise NotFoundError(
            f"directory {path.parent} does not exist",
            hint="create it first, or choose a path in an existing directory",
        )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConflictError(
            f"{path} exists", hint="add --force to overwrite it, or choose another name"
        ) from None
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8", newline="")
