"""Startup cost of `idprov user add` on the embedded default, as a ratio.

Measures, interleaved in one run, the wall time of
  (a) `idprov user add USER --claim email=...` with no config file (embedded default,
      a fresh data directory), and
  (b) `python -c "import typer, sqlite_utils"`, idprov's two essential libraries,
and prints the medians of wall time and of CPU time (user + system: steadier than
wall time on a shared machine) and the ratios a/b. Target (issue 17): <= 1.15.

Bytecode is compiled first and written (PYTHONDONTWRITEBYTECODE is cleared for the
children), as on an installed system. An editable install (`pip install -e`) adds an
import hook of ~20 ms: measure an installed copy (`pip install .` into another venv,
then run this script with that venv's python). Usage: python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import idprov


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{cmd} failed: exit code {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    compileall.compile_dir(str(Path(idprov.__file__).parent), quiet=1)
    exe = shutil.which("idprov") or str(Path(sys.executable).parent / "idprov")
    work = Path(tempfile.mkdtemp(prefix="idprov-bench-"))
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "IDPROV_CONFIG")
    }
    env.update(XDG_DATA_HOME=str(work / "data"), XDG_CONFIG_HOME=str(work / "config"))
    env.pop("IDPROV_DATA_DIR", None)
    base_cmd = [sys.executable, "-c", "import typer, sqlite_utils"]
    timed([exe, "user", "add", "warmup", "--claim", "email=w@example.com"], env)
    timed(base_cmd, env)
    ours, base = [], []
    for i in range(args.runs):
        ours.append(
            timed([exe, "user", "add", f"user{i:04d}", "-c", f"email=u{i}@example.com"], env)
        )
        base.append(timed(base_cmd, env))
    shutil.rmtree(work)
    for what, i in (("wall", 0), ("CPU", 1)):
        mo, mb = statistics.median(r[i] for r in ours), statistics.median(r[i] for r in base)
        print(
            f"{what}: idprov user add (embedded default) median {mo * 1000:.0f} ms, "
            f"python -c 'import typer, sqlite_utils' {mb * 1000:.0f} ms over {args.runs} runs: "
            f"ratio {mo / mb:.2f}x (target <= 1.15x)"
        )


if __name__ == "__main__":
    main()
