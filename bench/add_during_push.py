"""`idprov user add` while another process's push waits on a slow target (#12: < 1 s).

A SCIM target that answers every request after 3 s (bench/fast_scim2_server.py
--delay 3, a process of its own). One process runs `idprov user add alice`, whose push
to that target takes 6 s and more (the target's discovery, then the create); while it
waits, another process runs `idprov user add` for an application without identity
providers, three times. The baseline is the same command, three times, with nothing in
flight, in the same run. Each timed command is checked to have ended while the push
was still waiting (else the figure would not be what it says).

Usage: python bench/add_during_push.py
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from outbound_push import start_server, stop  # noqa: E402

IDPROV = str(Path(sys.executable).parent / "idprov")
DELAY = 3.0


def config_text(data_dir: str, target: str) -> str:
    return f"""
version: 1
data_dir: {data_dir}
identity_providers:
  - name: slow
    connector: scim2
    options: {{base_url: "{target}", auth: bearer, token: env:BENCH_TARGET_TOKEN, timeout: 60}}
applications:
  - name: resident
    identity_providers: [slow]
  - name: offline
    identity_providers: []
"""


def timed(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([IDPROV, *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    token = secrets.token_urlsafe(16)
    target, url = start_server(token, DELAY)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "idprov.yaml"
            config.write_text(config_text(str(Path(tmp) / "data"), url))
            env = {**os.environ, "IDPROV_CONFIG": str(config), "BENCH_TARGET_TOKEN": token}
            timed(env, "role", "add", "staff", "--app", "offline")
            alone = [timed(env, "user", "add", f"a{i}", "--app", "offline", "-r", "staff")
                     for i in range(3)]  # fmt: skip
            pushing = subprocess.Popen(
                [IDPROV, "user", "add", "alice"], env=env, stdout=subprocess.DEVNULL
            )
            time.sleep(1.0)  # started, and waiting on the target (it answers after 3 s)
            during = []
            for i in range(3):
                during.append(timed(env, "user", "add", f"b{i}", "--app", "offline", "-r", "staff"))
                assert pushing.poll() is None, "the push ended before the timed command"
            assert pushing.wait(120) == 0, "the push failed"
    finally:
        stop(target)
    with_push, baseline = statistics.median(during), statistics.median(alone)
    print(
        f"`user add` while another process's push waits on a {DELAY:.0f} s target: "
        f"{with_push:.2f} s (median of 3, {min(during):.2f}-{max(during):.2f}; the push "
        f"was still waiting after each); the same with nothing in flight: {baseline:.2f} s; "
        f"ratio {with_push / baseline:.2f}x; target < 1 s"
    )


if __name__ == "__main__":
    main()
