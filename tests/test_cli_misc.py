"""The rest of the CLI: `log`, `init`, `secret set`, `--version`, help text, startup cost."""

from __future__ import annotations

import json
import re
import stat
from importlib.resources import files
from typing import Any

import pytest
from typer.main import get_command

import idprov
from idprov import open_service
from idprov.cli.main import app

# ---- --version and help


def test_version(cli):
    r = cli("--version").ok()
    assert r.stdout == f"idprov {idprov.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", idprov.__version__)


def test_python_dash_m_idprov(run_python):
    proc = run_python("import runpy, sys; sys.argv = ['idprov', '--version']; "
                      "runpy.run_module('idprov', run_name='__main__')")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"idprov {idprov.__version__}\n"


def command_tree() -> list[tuple[tuple[str, ...], Any]]:
    """Every command and sub-command, loading the lazily attached sub-apps.

    Typer builds its commands on a click of its own, so groups are recognised by
    what they do (``list_commands``), not by click's classes."""
    found: list[tuple[tuple[str, ...], Any]] = []

    def visit(command: Any, path: tuple[str, ...], ctx: Any) -> None:
        found.append((path, command))
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"{' '.join(path)} lists {name} but cannot load it"
                visit(sub, (*path, name), sub.context_class(sub, info_name=name, parent=ctx))

    root = get_command(app)
    visit(root, (), root.context_class(root, info_name="idprov"))
    return found


COMMANDS = command_tree()


def test_command_tree_has_every_noun_and_verb():
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {
        "user add", "user show", "user list", "user update", "user passwd", "user delete",
        "role add", "role list", "role show", "role delete", "role rename", "role assign",
        "role unassign", "config validate", "config show", "init", "log", "secret set",
    } <= paths  # fmt: skip


@pytest.mark.parametrize(
    ("path", "command"), COMMANDS, ids=[" ".join(p) or "idprov" for p, _ in COMMANDS]
)
def test_every_command_has_help_text(cli, path, command):
    assert (command.help or "").strip(), f"idprov {' '.join(path)} has no help text"
    for param in command.params:
        if param.name == "help":
            continue
        assert (getattr(param, "help", None) or "").strip(), (
            f"idprov {' '.join(path)}: {param.name} has no help text"
        )
    r = cli(*path, "--help").ok()
    assert command.help.strip().splitlines()[0][:40] in " ".join(r.stdout.split())


# ---- init


def test_init_writes_a_starter_config_that_validates(cli, config_dir, data_dir):
    target = config_dir / "idprov.yaml"
    r = cli("init").ok()
    assert str(target) in r.stdout
    assert target.read_text() == files("idprov.config").joinpath("starter.yaml").read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    result = cli("config", "validate", "--json").json()
    assert (result["valid"], result["source"]) == (True, str(target))
    assert not data_dir.exists()
    assert "email" in cli("user", "add", "alice").fails(5)
    cli("user", "add", "alice", "-c", "email=alice@example.com", "-c", "badge_id=123456").ok()


def test_init_refuses_to_overwrite_without_force(cli, config_dir):
    cli("init").ok()
    target = config_dir / "idprov.yaml"
    target.write_text("version: 1  # edited by hand\n")
    err = cli("init").fails(4)
    assert "exists" in err and "--force" in err
    assert cli("init", "--json").error(4)["code"] == "conflict"
    assert target.read_text() == "version: 1  # edited by hand\n"
    cli("init", "--force").ok()
    assert "badge_id" in target.read_text()


def test_init_to_a_chosen_path(cli, tmp_path, config_dir):
    result = cli("init", "--path", "conf/idprov.yaml", "--json").json()
    assert result == {"written": "conf/idprov.yaml"}
    assert (tmp_path / "conf" / "idprov.yaml").is_file()
    assert not (config_dir / "idprov.yaml").exists()
    cli("--config", "conf/idprov.yaml", "config", "validate").ok()


# ---- log


@pytest.fixture
def history(cli, write_config, monkeypatch):
    """A few changes by OS user ops-anna, one through application hr-feed."""
    write_config("applications:\n  - name: hr-feed\n    description: HR import\n")
    monkeypatch.setenv("LOGNAME", "ops-anna")
    monkeypatch.setenv("USER", "ops-anna")
    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-r", "staff", "--password-stdin", input="pw-alice-123\n").ok()
    cli("user", "add", "alicia", "--app", "hr-feed").ok()
    cli("user", "add", "bob").ok()
    cli("user", "passwd", "bob", "--password-stdin", input="pw-bob-4567\n").ok()
    cli("role", "assign", "staff", "bob").ok()
    cli("user", "delete", "alicia", "--yes").ok()


def test_log_says_who_what_and_through_which_application(cli, history):
    entries = cli("log", "--json").items()
    assert [(e["actor"], e["application"], e["action"], e["target"]) for e in entries] == [
        ("ops-anna", "resident", "user.delete", "alicia"),
        ("ops-anna", "resident", "role.assign", "staff"),
        ("ops-anna", "resident", "user.passwd", "bob"),
        ("ops-anna", "resident", "user.add", "bob"),
        ("ops-anna", "hr-feed", "user.add", "alicia"),
        ("ops-anna", "resident", "user.add", "alice"),
        ("ops-anna", "resident", "role.add", "staff"),
    ]
    assert {e["outcome"] for e in entries} == {"ok"}
    assert entries[-2]["details"] == {"claims": [], "password": True, "roles": ["staff"]}
    stamps = [e["at"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)


def test_log_rich_view_says_what_json_says(cli, history):
    """Not on a terminal (as here), one tab-separated row per entry, every detail."""
    entries = cli("log", "--json").items()
    header, *lines = cli("log").ok().stdout.splitlines()
    assert header.split("\t") == [
        "at", "actor", "application", "action", "target", "outcome", "details"
    ]  # fmt: skip
    assert len(lines) == len(entries)
    for line, e in zip(lines, entries, strict=True):
        at, actor, application, action, target, outcome, _ = line.split("\t")
        assert (at, actor, application) == (e["at"], e["actor"], e["application"])
        assert (action, target, outcome) == (e["action"], e["target"], e["outcome"])
    assert lines[1].split("\t")[6] == "users=bob"
    assert "\tops-anna\thr-feed\tuser.add\talicia\t" in lines[4]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--action", "user.add"], ["bob", "alicia", "alice"]),
        (["--action", "role."], ["staff", "staff"]),
        (["--target", "ali"], ["alicia", "alicia", "alice"]),
        (["--target", "alice"], ["alice"]),
        (["--app", "hr-feed"], ["alicia"]),
        (["--actor", "ops-anna", "--limit", "2"], ["alicia", "staff"]),
        (["--actor", "someone-else"], []),
        (["--action", "user.", "--target", "bob"], ["bob", "bob"]),
        (["--since", "2999-01-01T00:00:00Z"], []),
        (["--until", "2000-01-01T00:00:00Z"], []),
    ],
)
def test_log_filters(cli, history, args, expected):
    assert [e["target"] for e in cli("log", *args, "--json").items()] == expected


def test_log_limit_0_shows_every_entry_as_user_list_does(cli, history):
    """`--limit 0` means no limit, as for `user list` (it was refused)."""
    before = cli("log", "--json").items()
    with open_service() as svc:
        for i in range(50):
            svc.add_user(f"bulk{i}", {})
    assert len(cli("log", "--json").items()) == 50
    every = cli("log", "--limit", "0", "--json").items()
    assert [e["target"] for e in every[:50]] == [f"bulk{i}" for i in reversed(range(50))]
    assert every[50:] == before


def test_log_time_window(cli, history):
    entries = cli("log", "--json").items()
    middle = entries[3]["at"]
    newer = cli("log", "--since", middle, "--json").items()
    older = cli("log", "--until", middle, "--json").items()
    assert newer and older
    assert all(e["at"] >= middle for e in newer)
    assert all(e["at"] < middle for e in older)
    assert sorted(e["id"] for e in newer + older) == sorted(e["id"] for e in entries)


def test_log_shows_other_actors_of_the_library_api(cli, history):
    with open_service(actor="hr-bot", application="hr-feed") as svc:
        svc.add_user("zed", {"email": "zed@example.com"})
    (entry,) = cli("log", "--actor", "hr-bot", "--json").items()
    assert (entry["application"], entry["action"], entry["target"]) == (
        "hr-feed",
        "user.add",
        "zed",
    )


def test_passwords_never_reach_the_audit_log(cli, history, state):
    text = cli("log").ok().stdout + cli("log", "--json").ok().stdout
    raw = json.dumps(state.rows("SELECT * FROM audit"))
    for password in ("pw-alice-123", "pw-bob-4567"):
        assert password not in text
        assert password not in raw


def test_log_when_nothing_happened(cli):
    run = cli("log").ok()
    assert (run.stdout, run.stderr.strip()) == ("", "no audit entries match")
    assert cli("log", "--json").items() == []


def test_unknown_application(cli, state):
    error = cli("user", "add", "alice", "--app", "nope", "--json").error(3)
    assert "nope" in error["message"] and "resident" in error["hint"]
    assert state.counts()["users"] == 0


# ---- secret set


def test_secret_set_stores_in_the_keyring(cli, keyring_backend):
    backend = keyring_backend("memory")
    r = cli("secret", "set", "corp-scim", "--stdin", input="tok-5551212\n").ok()
    assert "keyring:idprov/corp-scim" in r.stdout
    assert "tok-5551212" not in r.stdout + r.stderr
    assert backend.items == {("idprov", "corp-scim"): "tok-5551212"}
    r = cli("secret", "set", "other", "--json", input="typed-secret\ntyped-secret\n")
    assert "Value for other" in r.stderr and "Repeat for confirmation" in r.stderr
    assert r.json() == {"reference": "keyring:idprov/other"}
    assert backend.items[("idprov", "other")] == "typed-secret"
    assert "typed-secret" not in r.stdout + r.stderr


@pytest.mark.parametrize("kind", ["fail", "null"])
def test_secret_set_without_a_keyring_points_to_env_and_file(cli, keyring_backend, kind):
    keyring_backend(kind)
    err = cli("secret", "set", "corp-scim", "--stdin", input="tok-5551212\n").fails(2)
    assert "no usable keyring backend" in err
    assert "env:NAME" in err and "file:PATH" in err
    assert "tok-5551212" not in err
    error = cli("secret", "set", "corp-scim", "--stdin", "--json", input="x\n").error(2)
    assert error["code"] == "secret"


def test_secret_set_refuses_an_empty_value(cli, keyring_backend):
    backend = keyring_backend("memory")
    assert "empty" in cli("secret", "set", "x", "--stdin", input="\n").fails(2)
    assert backend.items == {}


# ---- what a command imports


HEAVY = ("httpx", "lxml", "ldap3", "yaml", "sqlite_utils", "ssl", "http.client", "urllib.request")
COMMAND_MODULES = tuple(
    f"idprov.cli.{name}"
    for name in ("user", "role", "config_cmd", "secret", "outbound", "import_cmd", "token")
    + ("serve", "jit", "log", "sync", "status")
)
PROBE = """
import json, sys
sys.argv = ["idprov", *{argv!r}]
from idprov.cli.main import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
loaded = sorted(m for m in {heavy!r} if m in sys.modules)
print("PROBE " + json.dumps({{"code": code, "loaded": loaded}}))
"""


def probe(run_python, *argv: str, watch: tuple[str, ...] = HEAVY) -> dict:
    """Run ``idprov ARGV`` in a fresh interpreter: its exit code, and which of the
    modules in ``watch`` it imported."""
    proc = run_python(PROBE.format(argv=list(argv), heavy=watch))
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("PROBE ")][-1]
    return json.loads(line[len("PROBE ") :])


@pytest.mark.parametrize(
    "argv",
    [
        ("user", "add", "alice", "-c", "email=a@example.com"),
        ("user", "list"),
        ("role", "add", "staff"),
        ("log",),
    ],
)
def test_commands_without_a_config_file_skip_heavy_imports(run_python, argv):
    result = probe(run_python, *argv)
    assert result == {"code": 0, "loaded": []}


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (("user", "add", "alice"), "idprov.cli.user"),
        (("log",), "idprov.cli.log"),
        (("status",), "idprov.cli.status"),
        (("role", "list"), "idprov.cli.role"),
    ],
)
def test_a_command_imports_its_own_module_only(run_python, argv, module):
    assert probe(run_python, *argv, watch=COMMAND_MODULES) == {"code": 0, "loaded": [module]}


def test_a_mistyped_command_gets_a_suggestion(cli):
    assert "No such command 'ad'. Did you mean 'add'?" in cli("user", "ad", "x").fails(2)
    assert "Did you mean 'user'?" in cli("usr").fails(2)


def test_the_probe_sees_heavy_imports(run_python, write_config):
    write_config("version: 1\n")
    assert probe(run_python, "user", "list")["loaded"] == ["yaml"]


@pytest.mark.parametrize("argv", [("user", "list"), ("user", "add", "alice"), ("role", "list")])
def test_output_to_a_pipe_loads_neither_rich_nor_package_metadata(run_python, write_config, argv):
    """A script's or cron's command (stdout not a terminal) prints plain lines: rich,
    13 ms to import, is not loaded; nor is importlib.metadata, 11 ms, to find a
    built-in connector of the configured identity provider."""
    write_config(
        "version: 1\nidentity_providers:\n  - name: crm\n    connector: scim2\n"
        "    blocking: false\n"  # with --no-wait, a user add leaves its row queued
        "    options: {base_url: 'https://scim.example.com/v2', auth: none}\n"
        "applications:\n  - name: resident\n    identity_providers: [crm]\n"
    )
    watch = ("rich", "importlib.metadata")
    assert probe(run_python, "--no-wait", *argv, watch=watch) == {"code": 0, "loaded": []}


@pytest.mark.parametrize(
    "argv",
    [
        ("user", "add"),
        ("user", "add", "alice", "--bogus"),
        ("user", "list", "--limit", "-1"),
        ("log", "--limit", "-1"),
        ("role", "assign", "staff"),
    ],
)
def test_command_line_mistakes_are_usage_errors(cli, argv):
    run = cli(*argv)
    assert run.exit_code == 2, run
    assert "internal error" not in run.stderr
    assert "Usage:" in run.stdout + run.stderr


def test_application_errors_name_the_declared_application(cli, write_config):
    write_config("version: 1\napplications:\n  - name: portal\n    identity_providers: [nowhere]\n")
    run = cli("config", "validate")
    assert run.exit_code == 2, run
    assert "idprov.yaml:4:" in run.stderr and "applications[0]" in run.stderr


def test_a_command_started_with_stdout_closed_does_its_work(tmp_path, cli):
    """`idprov user add x >&-` (or a service manager without stdout): Python has no
    sys.stdout, and every command ended in 'internal error ... this is a bug', after
    its change was made. What it would print goes nowhere; its exit code is its own."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "idprov")
    done = subprocess.run(
        [exe, "user", "add", "closed"],
        env=dict(os.environ),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),  # noqa: PLW1509 - only what the test child needs
    )
    assert done.returncode == 0 and "internal error" not in done.stderr, done.stderr
    assert cli("user", "show", "closed", "--json").json()["username"] == "closed"


def test_json_before_the_command_is_the_commands_own_json(cli):
    """`idprov --json user list` (the trial's first try said "No such option: --json")."""
    cli("user", "add", "alice").ok()
    placed = cli("--json", "user", "list")
    assert placed.exit_code == 0, placed
    assert placed.stdout == cli("user", "list", "--json").stdout
    assert json.loads(placed.stdout)["items"][0]["username"] == "alice"
    error = cli("--json", "user", "show", "nobody").error(3)
    assert error["message"] == "no user 'nobody' in the PRIMARY userstore"
    assert cli("--json", "user", "list", "--bogus").error(2)["message"] == (
        "No such option: --bogus"
    )
