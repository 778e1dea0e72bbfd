"""Startup cost of `idprov user add` on the embedded default, as a ratio.

Measures, interleaved in one run,
  (a) `idprov user add USER --claim email=...` with no config file (embedded default,
      a fresh data directory),
  (b) `python -c "import typer, sqlite_utils"`, the baseline issue 17 names (the two
      libraries idprov was built on; idprov no longer imports sqlite-utils), and
  (c) `python -c "import typer"`, the one library a command needs,
and prints the medians of wall time and of CPU time (user + system: steadier than
wall time on a shared machine) and the ratios a/b and a/c. Target: a/b <= 1.15.

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
    baselines = {
        "python -c 'import typer, sqlite_utils'": [
            sys.executable,
            "-c",
            "import typer, sqlite_utils",
        ],
        "python -c 'import typer'": [sys.executable, "-c", "import typer"],
    }
    timed([exe, "user", "add", "warmup", "--claim", "email=w@example.com"], env)
    ours: list[tuple[float, float]] = []
    base: dict[str, list[tuple[float, float]]] = {name: [] for name in baselines}
    for i in range(args.runs):
        user = [exe, "user", "add", f"user{i:04d}", "-c", f"email=u{i}@example.com"]
        ours.append(timed(user, env))
        for name, cmd in baselines.items():
            base[name].append(timed(cmd, env))
    shutil.rmtree(work)
    print(f"idprov user add on the embedded default, medians of {args.runs} runs, interleaved:")
    for what, i in (("wall", 0), ("CPU", 1)):
        mine = statistics.median(r[i] for r in ours)
        print(f"  {what}: idprov user add {mine * 1000:.0f} ms")
        for name, runs in base.items():
            other = statistics.median(r[i] for r in runs)
            print(f"    {name} {other * 1000:.0f} ms: ratio {mine / other:.2f}x")
    print("target: <= 1.15x of python -c 'import typer, sqlite_utils'")


if __name__ == "__main__":
    main()
