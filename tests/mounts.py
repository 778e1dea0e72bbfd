"""Run idprov where a directory is read-only or its disk is full, for real.

Tests run as root (CI does), and root writes through any file mode, so a chmod
proves nothing. Instead idprov runs in a private mount namespace (``unshare -m``)
where a directory is bind-mounted read-only (the kernel then refuses writes with
EROFS, for root too) or replaced by a tiny tmpfs that fills up (ENOSPC). The
mounts vanish with the process; the host is untouched.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

IDPROV = "import sys; from idprov.cli.main import main; sys.argv[0] = 'idprov'; main()"


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _unshare_works(), reason="needs `unshare -m` (root, Linux) to mount for real"
)


def run_with_mounts(
    mounts: list[str], args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``idprov ARGS`` after the shell commands ``mounts``, in a namespace of its own."""
    command = " && ".join([*mounts, shlex.join([sys.executable, "-c", IDPROV, *args])])
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read_only(directory: Path) -> list[str]:
    d = shlex.quote(str(directory))
    return [f"mount --bind {d} {d}", f"mount -o remount,bind,ro {d}"]


def tiny_disk(directory: Path, size: str = "256k") -> list[str]:
    d = shlex.quote(str(directory))
    return [f"mount -t tmpfs -o size={size} tmpfs {d}"]
