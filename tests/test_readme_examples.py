"""The README's examples for plugin authors and library users, run as written: the
code blocks of "Writing a connector" and "Using idprov as a library" are read from
README.md, so that they cannot drift from what idprov does. The example connector
passes the contract kit against the people API it is written for (on loopback), with
the IdP YAML the kit's section shows; the library example runs against scim2-server."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idprov.connectors import registry
from idprov.testing import ConnectorContract, ContractTarget
from tests.peers.people import PeopleApi, serve_people_api
from tests.peers.scim2 import Scim2Peer

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(section: str, language: str) -> list[str]:
    """The ``language`` code blocks of README section ``## section``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else None]
    return re.findall(rf"^```{language}\n(.*?)^```$", body, flags=re.S | re.M)


MODULE = "readme_people_idprov"


@pytest.fixture
def people_api() -> Iterator[PeopleApi]:
    """An empty people API of this test's own, on loopback."""
    with serve_people_api() as api:
        yield api


@pytest.fixture
def readme_connector(monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """The README's connector module, installed under its entry point's name."""
    (toml,) = blocks("Writing a connector", "toml")
    name = re.search(r"^(\w+) = \"[\w.]+:(\w+)\"$", toml, flags=re.M)
    assert name is not None, toml
    source = blocks("Writing a connector", "python")[0]
    module = types.ModuleType(MODULE)
    monkeypatch.setitem(sys.modules, MODULE, module)  # before its dataclasses are made
    exec(compile(source, f"README.md ({MODULE})", "exec"), module.__dict__)
    ep = importlib.metadata.EntryPoint(name[1], f"{MODULE}:{name[2]}", registry.GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [ep])
    registry._entry_points.cache_clear()
    registry.load.cache_clear()
    yield registry.load(name[1])
    registry._entry_points.cache_clear()
    registry.load.cache_clear()


class PeopleTarget(ContractTarget):
    """The contract kit's adapter for the people API, as the README's outline has it."""

    def __init__(self, api: PeopleApi) -> None:
        self.api = api

    def identity_provider(self) -> str:
        (yaml,) = blocks("Writing a connector", "yaml")
        return yaml.replace("https://people.example.com", self.api.url)

    def account(self, user_name: str) -> dict[str, Any] | None:
        return self.api.user(user_name)

    def family_name(self, user_name: str) -> str | None:
        return ((self.api.user(user_name) or {}).get("profile") or {}).get("last")

    def members(self, role: str) -> set[str]:
        group = self.api.group(role)
        ids = set(group["members"]) if group else set()
        return {u["login"] for u in self.api.users.values() if u["id"] in ids}

    def add_foreign_account(self, user_name: str) -> None:
        self.api.handle("POST", "/api/users", {}, {"login": user_name})

    def lose_next_create_reply(self) -> None:
        self.api.lose_next_create = True

    def throttle_next(self, count: int) -> None:
        self.api.throttle = count

    def disable_at_target(self, user_name: str) -> None:
        user = self.api.user(user_name)
        assert user is not None
        user["active"] = False

    def refuse_credentials(self) -> None:
        self.api.token = "revoked"


class TestTheReadmeConnectorPassesTheKit(ConnectorContract):
    @pytest.fixture
    def contract_target(
        self, people_api: PeopleApi, readme_connector: type, monkeypatch: pytest.MonkeyPatch
    ) -> PeopleTarget:
        monkeypatch.setenv("PEOPLE_TOKEN", people_api.token)
        return PeopleTarget(people_api)


def test_the_readme_connector_is_checked_by_idp_test(
    cli, write_config, people_api, readme_connector, monkeypatch
):
    monkeypatch.setenv("PEOPLE_TOKEN", people_api.token)
    idp = PeopleTarget(people_api).identity_provider().replace("name: target", "name: people")
    write_config(
        f"version: 1\nidentity_providers:\n{idp}applications:\n"
        "  - name: resident\n    identity_providers: [people]\n"
    )
    assert cli("idp", "test", "people", "--json").ok().json()["ok"] is True
    people_api.token = "revoked"
    refused = cli("idp", "test", "people").fails(6)
    assert "HTTP 401" in refused and "check the secret options.token names" in refused
    assert "(env:PEOPLE_TOKEN)" in refused


def test_a_verify_at_an_idp_whose_connector_cannot_read_users_says_so_and_fails_nothing(
    cli, write_config, people_api, readme_connector, monkeypatch
):
    """read_user is optional for a connector (the README's has none): sync --verify
    checks nothing there, says so, and exits 0, as it exited 6 (operations failed)."""
    monkeypatch.setenv("PEOPLE_TOKEN", people_api.token)
    idp = PeopleTarget(people_api).identity_provider().replace("name: target", "name: people")
    write_config(
        f"version: 1\nidentity_providers:\n{idp}applications:\n"
        "  - name: resident\n    identity_providers: [people]\n"
    )
    cli("user", "add", "nia").ok()
    shown = cli("sync", "--verify").ok().stdout
    assert "not verified: the people connector cannot read users: nothing was checked" in shown
    report = cli("sync", "--verify", "--json").ok().json()["drift"]["people"]
    assert report["errors"] == [] and "cannot read users" in report["unverifiable"]


def test_the_library_example_runs_on_a_fresh_install(
    write_config, scim2_server: Scim2Peer, monkeypatch, capsys
):
    (example,) = blocks("Using idprov as a library", "python")
    monkeypatch.setenv("LIB_TOKEN", scim2_server.token)
    write_config(
        "version: 1\nidentity_providers:\n  - name: crm\n    connector: scim2\n"
        f"    options: {{base_url: '{scim2_server.base_url}', auth: bearer, "
        "token: env:LIB_TOKEN}\n"
        "applications:\n  - name: resident\n    identity_providers: [crm]\n"
    )
    exec(compile(example, "README.md (library example)", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["True", "1 ['alice']"], out
    assert sorted(u["userName"] for u in scim2_server.users()) == ["alice", "bob"]
    scim2_server.client.delete(f"/Users/{scim2_server.users()[0]['id']}")
    with pytest.raises(SystemExit, match=r"user 'alice' already exists.*\(conflict; "):
        exec(compile(example, "README.md (library example)", "exec"), {})


def test_the_library_example_shows_a_push_failure(write_config, monkeypatch, capsys):
    (example,) = blocks("Using idprov as a library", "python")
    monkeypatch.setenv("LIB_TOKEN", "x")
    write_config(
        "version: 1\nidentity_providers:\n  - name: crm\n    connector: scim2\n"
        "    retry: {max_attempts: 1}\n"
        "    options: {base_url: 'http://127.0.0.1:9/scim', auth: bearer, token: env:LIB_TOKEN}\n"
        "applications:\n  - name: resident\n    identity_providers: [crm]\n"
    )
    with contextlib.redirect_stderr(io.StringIO()):
        exec(compile(example, "README.md (library example)", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("crm: user alice: create: create user alice: cannot reach"), out
    assert out[2].startswith("crm: role staff: create: "), out
    assert out[3:] == ["False", "1 ['alice']"], out


def test_the_bulk_import_example_prints_what_the_readme_shows(cli, tmp_path):
    """The "Bulk import" example's file, imported as shown: the counts, the roles
    created and every rejected line are the README's (the rate aside)."""
    (console,) = blocks("Bulk import", "console")[:1]
    csv_text = re.search(r"^\$ cat users\.csv\n(.*?)^\$ ", console, flags=re.S | re.M)
    command = re.search(r"^\$ idprov (import users .*)\n((?:[^$].*\n)*)", console, flags=re.M)
    assert csv_text is not None and command is not None, console
    (tmp_path / "users.csv").write_text(csv_text[1], encoding="utf-8")
    run = cli(*command[1].split())
    assert run.exit_code == int(re.search(r"^\$ echo \$\?\n(\d+)$", console, flags=re.M)[1])
    shown = command[2].splitlines()
    counts = dict(line.split(None, 1) for line in shown[1:] if re.fullmatch(r"\w+ +\d+", line))
    printed = dict(line.split("\t", 1) for line in run.stdout.splitlines() if "\t" in line)
    assert {k: printed.get(k) for k in ("rows", "created", "rejected")} == {
        k: counts[k] for k in ("rows", "created", "rejected")
    }
    notes = [line for line in shown if line.startswith(("roles created:", "  ✗", "rejected rows"))]
    said = run.stdout + run.stderr
    assert [line for line in said.splitlines() if line in notes] == notes
    roles = {r["name"] for r in cli("role", "list", "--json").items()}
    assert roles == {r for r in notes[0].removeprefix("roles created: ").split(", ")}


def _plan_rows(text: str, separator: str) -> list[list[str]]:
    """The rows of the plan tables in ``text`` (README: columns two spaces apart; the
    CLI off a terminal: tab-separated)."""
    rows = [re.split(separator, line) for line in text.splitlines()]
    return [row for row in rows if row[0] in ("create", "update", "delete", "disable")]


def _output_of(console: str, command: str) -> str:
    """What a README console block shows after ``$ idprov COMMAND``, up to the next $."""
    found = re.search(rf"^\$ idprov {re.escape(command)}\n((?:[^$].*\n)*)", console, re.M)
    assert found is not None, command
    return found[1]


def test_the_tour_and_its_first_sync_print_what_the_readme_shows(
    cli, write_config, scim2_server: Scim2Peer, monkeypatch
):
    """The tour's commands, then the "Outbound provisioning" IdP and its first sync:
    the plan it prints and its outcome are the README's (the run id aside)."""
    import shlex

    cli("user", "add", "alice", "--claim", "email=alice@example.com").ok()
    (tour, *_) = blocks("A tour", "console")
    for line in tour.splitlines():
        if line.startswith("$ idprov "):
            run = cli(*shlex.split(line)[2:]).ok()
            if line == "$ idprov user list":
                shown = _output_of(tour, "user list").splitlines()
                assert [re.split(r"\s{2,}", row) for row in shown[:-1]] == [
                    row.split("\t") for row in run.stdout.splitlines()
                ]
    (yaml, *_) = blocks("Outbound provisioning", "yaml")
    write_config(re.sub(r"base_url: \S+", f"base_url: {scim2_server.base_url}", yaml))
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (console, *_) = blocks("Outbound provisioning", "console")
    expected = _output_of(console, "sync")
    synced = cli("sync").ok().stdout
    assert _plan_rows(synced, "\t") == _plan_rows(expected, r"\s{2,}")
    summary = [line for line in expected.splitlines() if line.startswith(("scim-main:", "  ✓"))]
    assert summary and all(line in synced.splitlines() for line in summary), synced
