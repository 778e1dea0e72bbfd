"""The sample cron line and systemd units in sample-configs/ work as shipped: their
command lines are accepted and do what the comments say (JSON Lines, metrics, the
state directory), and systemd-analyze finds nothing wrong with the units."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_guard import scim, seed  # noqa: F401 - the fixture

SAMPLES = Path(__file__).resolve().parents[1] / "sample-configs"
IDPROV = str(Path(sys.executable).parent / "idprov")


def cron_job() -> tuple[dict[str, str], list[str], str, str]:
    """(environment, argv, stdout file, stderr file) of the sample crontab's job."""
    env, job = {}, ""
    for line in (SAMPLES / "idprov-sync.cron").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep and " " not in name:
            env[name] = value
        else:
            job = line
    fields = job.split(None, 6)
    command, out = fields[6].split(" >> ", 1)
    out, err = out.split(" 2>> ")
    return env, shlex.split(command), out.strip(), err.strip()


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(SAMPLES / name)
    return parser


def metrics_path(argv: list[str]) -> str:
    return argv[argv.index("--metrics") + 1]


def test_the_cron_line_appends_one_json_document_per_run(cli, scim, tmp_path):  # noqa: F811
    env, argv, out, err = cron_job()
    assert argv[0].endswith("/idprov") and out.endswith(".jsonl")
    assert env["IDPROV_DATA_DIR"] == "/var/lib/idprov"
    seed(2)
    argv[argv.index("--metrics") + 1] = str(tmp_path / "sync.prom")
    log = tmp_path / "sync.jsonl"
    for _ in range(2):
        run = cli(*argv[1:])
        assert run.exit_code == 0, run
        with log.open("a") as handle:
            handle.write(run.stdout)
    documents = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(documents) == 2 and all(d["plan"]["application"] == "resident" for d in documents)
    assert (tmp_path / "sync.prom").read_text().endswith("# EOF\n")


def install_commands() -> list[list[str]]:
    """The sample crontab's one-time install commands (its comment lines indented by
    three spaces), as argv."""
    lines = (SAMPLES / "idprov-sync.cron").read_text().splitlines()
    return [shlex.split(line[1:]) for line in lines if line.startswith("#   ")]


def test_the_cron_samples_install_lines_make_what_its_job_writes_to(tmp_path):
    """Installed as the sample says, under a scratch root, the job line runs as cron
    runs it (sh, the file's variables): the directories its redirections and its
    database need are made by the install lines (the log directory was made by
    nothing: the shell failed to open the redirections, and idprov never ran)."""
    root = tmp_path / "root"

    def rooted(text: str) -> str:
        return text.replace("/var/", f"{root}/var/").replace("/etc/", f"{root}/etc/")

    commands = install_commands()
    assert ["useradd", "--system"] == commands[0][:2] and commands[0][-1] == "idprov"
    made = [c for c in commands if c[:2] == ["install", "-d"]]
    assert made and all(c[c.index("-o") + 1] == "idprov" for c in made)
    for command in made:  # not root here: no -o/-g
        dirs = [rooted(a) for a in command if a.startswith("/")]
        subprocess.run(["install", "-d", "-m", "0750", *dirs], check=True)
    env, argv, out, err = cron_job()
    metrics = Path(rooted(metrics_path(argv)))
    assert any(
        c[0] == "setfacl" and c[-1] == str(metrics.parent).replace(str(root), "") for c in commands
    )
    metrics.parent.mkdir(parents=True)  # node_exporter's own directory
    (root / "etc/idprov").mkdir(parents=True)
    (root / "etc/idprov/idprov.yaml").write_text("version: 1\n")
    env = {k: rooted(v) for k, v in env.items() if k != "MAILTO"}
    env |= {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    job = shlex.join([IDPROV, *argv[1:]]) + f" >> {out} 2>> {err}"
    done = subprocess.run(["sh", "-c", rooted(job)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    [document] = [json.loads(line) for line in Path(rooted(out)).read_text().splitlines()]
    assert document["plan"]["application"] == "resident"
    assert Path(rooted(err)).read_text() == ""
    assert metrics.read_text().endswith("# EOF\n")
    assert (Path(env["IDPROV_DATA_DIR"]) / "idprov.db").exists()


@pytest.mark.parametrize("name", ["idprov-sync.service", "idprov-worker.service"])
def test_the_units_keep_the_database_in_their_state_directory(name, tmp_path):
    service = unit(name)["Service"]
    assert service["StateDirectory"] == "idprov"
    assert "/var/lib/idprov" not in service.get("ReadWritePaths", "")
    argv = shlex.split(service["ExecStart"])
    config = tmp_path / "idprov.yaml"
    config.write_text("version: 1\n")  # no data_dir: the state directory is used
    state = tmp_path / "state"
    state.mkdir()
    if "--metrics" in argv:
        argv[argv.index("--metrics") + 1] = str(tmp_path / "m.prom")
    if argv[1:3] == ["outbox", "work"]:
        argv.append("--once")  # the unit runs it until stopped
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STATE_DIRECTORY": str(state)}
    env["IDPROV_CONFIG"] = str(config)
    done = subprocess.run([IDPROV, *argv[1:]], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (state / "idprov.db").exists()
    assert not (tmp_path / ".local").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize(
    "name",
    ["idprov-sync.service", "idprov-sync.timer", "idprov-worker.service", "idprov-serve.service"],
)
def test_systemd_analyze_finds_nothing_wrong(name, tmp_path):
    for sample in SAMPLES.glob("idprov-*"):  # the timer needs its service beside it
        text = sample.read_text().replace("/opt/idprov/.venv/bin/idprov", IDPROV)
        (tmp_path / sample.name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / name)],
        capture_output=True,
        text=True,
    )
    problems = [line for line in done.stderr.splitlines() if name in line or "Unknown" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_the_serve_unit_serves_https_in_workers_until_sigterm_to_all(tmp_path):
    """The serve unit's command line, with the unit's state directory, a certificate
    of the test's own and a free port: HTTPS answers, the database is in the state
    directory, the access log is 0600, and SIGTERM to every process (systemd's stop)
    ends it with 0."""
    import os
    import signal
    import ssl

    import httpx

    from tests.test_serve_scim import self_signed
    from tests.test_serve_workers import read_json

    argv = shlex.split(unit("idprov-serve.service")["Service"]["ExecStart"])
    cert, key = self_signed(tmp_path)
    for option, value in [
        ("--port", "0"),
        ("--host", "127.0.0.1"),
        ("--certfile", cert),
        ("--keyfile", key),
        ("--access-log", str(tmp_path / "access.log")),
    ]:
        argv[argv.index(option) + 1] = value
    config = tmp_path / "idprov.yaml"
    config.write_text("version: 1\napplications:\n  - name: crm\n    inbound_token: env:TOKEN\n")
    state = tmp_path / "state"
    state.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STATE_DIRECTORY": str(state)}
    env |= {"IDPROV_CONFIG": str(config), "TOKEN": "unit-token-1234"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(
        [IDPROV, *argv[1:], "--json"], env=env, text=True, start_new_session=True, **pipes
    ) as served:
        try:
            ready = read_json(served.stdout)
            assert ready["workers"] == 2 and ready["url"].startswith("https://"), ready
            verify = ssl.create_default_context(cafile=cert)
            headers = {"Authorization": "Bearer unit-token-1234"}
            got = httpx.get(ready["url"] + "/Users", headers=headers, verify=verify, timeout=30)
            assert got.status_code == 200
        finally:
            os.killpg(served.pid, signal.SIGTERM)
            _, stderr = served.communicate(timeout=60)
    assert served.returncode == 0, stderr
    assert (state / "idprov.db").exists()
    assert (tmp_path / "access.log").stat().st_mode & 0o777 == 0o600
