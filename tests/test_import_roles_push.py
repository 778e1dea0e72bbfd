"""A role's group at the targets follows its members.

An import row that takes a role away from a user takes the user out of the role's
group at the targets in the same push, as `role unassign` does (the import queued only
the roles rows ended up with: the group kept the user until a later sync).

A role's push compares the group with the role for the members its changes touched (a
role assign, an import's batch), not for every member (an import into one large role
re-read all of it for each batch): what the target ends up with is what a whole
comparison gives, also when the group was deleted at the target (made again with every
member, in the same push), when another change without named members coalesced into
the row, and when another application changed the role's members."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.scim2 import Scim2Peer, Scim2Process, new_tenant

HEADER = "username,email,roles\n"


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    push_roles: all
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    return scim2_server


def members(scim: Scim2Peer) -> dict[str, list[str]]:
    names = {u["id"]: u["userName"] for u in scim.users()}
    groups = {g["displayName"]: g.get("members", []) for g in scim.groups()}
    return {name: sorted(names[m["value"]] for m in held) for name, held in groups.items() if held}


def load(cli, tmp_path: Path, rows: str, *more: str):
    path = tmp_path / "feed.csv"
    path.write_text(HEADER + rows)
    return cli("import", "users", str(path), "--mode", "upsert", *more)


@pytest.mark.parametrize("cell", ["staff;sales", "sales", ""])
def test_a_role_an_import_row_takes_away_leaves_the_group_at_the_target(cli, scim, tmp_path, cell):
    for role in ("eng", "staff", "sales"):
        cli("role", "add", role).ok()
    run = load(cli, tmp_path, "ann,ann@example.com,eng;staff\nbob,bob@example.com,eng\n")
    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": ["ann", "bob"], "staff": ["ann"]}

    run = load(cli, tmp_path, f"ann,ann@example.com,{cell}\n")

    assert run.exit_code == 0, run.stderr
    wanted = cell.split(";") if cell else []
    after = members(scim)
    assert after["eng"] == ["bob"]  # ann left eng at the target, not at the next sync
    assert after.get("staff", []) == (["ann"] if "staff" in wanted else [])
    assert after.get("sales", []) == (["ann"] if "sales" in wanted else [])
    assert cli("plan", "--detailed-exitcode").exit_code == 0  # nothing left for a sync
    assert cli("outbox", "list", "--json").items() == []


def feed(names: list[str], roles: str) -> str:
    return "".join(f"{n},{n}@example.com,{roles}\n" for n in names)


def test_batches_of_an_import_into_one_role_each_add_their_members(cli, scim, tmp_path):
    cli("role", "add", "eng").ok()
    first = [f"u{i:03}" for i in range(12)]
    run = load(cli, tmp_path, feed(first, "eng"), "--batch-size", "5")
    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": first}

    more = [f"v{i:03}" for i in range(7)]
    run = load(cli, tmp_path, feed(more, "eng"), "--batch-size", "3")
    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": sorted(first + more)}
    assert cli("plan", "--detailed-exitcode").exit_code == 0  # nothing left for a sync


def test_an_upsert_moving_users_between_roles_moves_them_at_the_target(cli, scim, tmp_path):
    for role in ("eng", "ops"):
        cli("role", "add", role).ok()
    run = load(cli, tmp_path, feed(["ann", "bob", "cid", "dan"], "eng"))
    assert run.exit_code == 0, run.stderr

    run = load(cli, tmp_path, feed(["bob", "cid"], "ops"), "--batch-size", "1")

    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": ["ann", "dan"], "ops": ["bob", "cid"]}
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_assign_and_unassign_change_only_their_users_in_the_group(cli, scim):
    cli("role", "add", "eng").ok()
    for name in ("ann", "bob", "cid"):
        cli("user", "add", name, "--role", "eng").ok()
    cli("user", "add", "dan").ok()

    cli("role", "assign", "eng", "dan").ok()
    assert members(scim) == {"eng": ["ann", "bob", "cid", "dan"]}
    cli("role", "unassign", "eng", "ann", "cid").ok()
    assert members(scim) == {"eng": ["bob", "dan"]}
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_group_deleted_at_the_target_is_made_again_with_every_member(cli, scim):
    """The assign names one user; the group is gone at the target: the push makes it
    again with all the role's members, not with the one its change named."""
    cli("role", "add", "eng").ok()
    for name in ("ann", "bob"):
        cli("user", "add", name, "--role", "eng").ok()
    cli("user", "add", "cid").ok()
    (group,) = scim.groups()
    scim.client.delete(f"/Groups/{group['id']}").raise_for_status()

    run = cli("role", "assign", "eng", "cid")

    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": ["ann", "bob", "cid"]}
    assert cli("outbox", "list", "--json").items() == []
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_change_naming_no_members_coalesced_in_makes_the_push_compare_all(cli, scim, tmp_path):
    """An import committed without its push (its row names the users it touched),
    then a role rename (naming none) of the same role: its push takes the row and
    compares every member, renaming the group with them in it."""
    cli("role", "add", "eng").ok()
    cli("user", "add", "ann", "--role", "eng").ok()
    run = load(cli, tmp_path, feed(["bob", "cid"], "eng"), "--no-push")
    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": ["ann"]}

    cli("role", "rename", "eng", "engineering").ok()

    assert members(scim) == {"engineering": ["ann", "bob", "cid"]}
    assert cli("plan", "--detailed-exitcode").exit_code == 0


@pytest.fixture()
def bee(scim2_server_process: Scim2Process) -> Iterator[Scim2Peer]:
    """A second tenant of the session's scim2-server: another application's target."""
    with new_tenant(scim2_server_process) as peer:
        yield peer


def test_a_change_another_application_made_is_in_the_next_push_of_the_group(
    cli, tmp_path, scim, bee
):
    """Two applications share the userstore, each with its own target. One assigns
    ann to eng: its change goes to its target alone. The other's next assign to eng
    (naming bob) compares every member at its target, ann too: nothing another
    application changed is left out of a group."""
    config = (tmp_path / "idprov.yaml").read_text()
    config = config.replace(
        "applications:\n",
        f"""  - name: bee
    connector: scim2
    options: {{base_url: "{bee.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    push_roles: all
applications:
  - name: other
    identity_providers: [bee]
""",
    )
    (tmp_path / "idprov.yaml").write_text(config)
    cli("role", "add", "eng").ok()
    for name in ("ann", "bob", "cid"):
        cli("user", "add", name).ok()
    cli("role", "assign", "eng", "cid", "--app", "other").ok()
    assert members(bee) == {"eng": ["cid"]}

    cli("role", "assign", "eng", "ann", "--app", "resident").ok()  # not sent to bee
    assert members(bee) == {"eng": ["cid"]}
    cli("role", "assign", "eng", "bob", "--app", "other").ok()

    assert members(bee) == {"eng": ["ann", "bob", "cid"]}
    assert members(scim) == {"eng": ["ann", "cid"]}  # compared whole there too
    cli("role", "unassign", "eng", "cid", "--app", "other").ok()
    cli("role", "unassign", "eng", "ann", "--app", "resident").ok()
    cli("role", "assign", "eng", "cid", "--app", "other").ok()
    assert members(bee) == {"eng": ["bob", "cid"]}
    assert members(scim) == {"eng": ["bob"]}


def test_a_scope_widened_since_the_last_push_brings_every_holder_in(cli, scim, tmp_path):
    """bob holds eng, outside the IdP's scope; the scope is widened to eng in the
    configuration, then cid is assigned eng: the group's push compares every member
    (the last whole compare was under the narrower scope), so bob, who no change
    touched, is created and put in the group with cid."""
    path = tmp_path / "idprov.yaml"
    narrow = "    provisioning_roles: [staff]\n    push_roles: all\n"
    path.write_text(path.read_text().replace("    push_roles: all\n", narrow))
    for role in ("staff", "eng"):
        cli("role", "add", role).ok()
    cli("user", "add", "ann", "--role", "staff", "--role", "eng").ok()
    cli("user", "add", "bob", "--role", "eng").ok()
    cli("user", "add", "cid").ok()
    assert members(scim) == {"eng": ["ann"], "staff": ["ann"]}

    wide = "    provisioning_roles: [staff, eng]\n    push_roles: all\n"
    path.write_text(path.read_text().replace(narrow, wide))
    run = cli("role", "assign", "eng", "cid")

    assert run.exit_code == 0, run.stderr
    assert members(scim) == {"eng": ["ann", "bob", "cid"], "staff": ["ann"]}


def test_a_discarded_row_is_brought_back_by_the_next_push_of_its_group(cli, scim, tmp_path):
    """`outbox discard` drops an import's row naming bob and cid: the next change of
    the group (an assign naming dan) compares every member, as the README promises
    ("the next change of it ... brings it back")."""
    cli("role", "add", "eng").ok()
    cli("user", "add", "ann", "--role", "eng").ok()
    for name in ("bob", "cid", "dan"):
        cli("user", "add", name).ok()
    run = load(cli, tmp_path, feed(["bob", "cid"], "eng"), "--no-push")
    assert run.exit_code == 0, run.stderr
    cli("outbox", "discard", "--idp", "scim", "--user", "eng", "--yes").ok()
    cli("outbox", "retry").ok()  # bob's and cid's own rows: nothing changes for them

    cli("role", "assign", "eng", "dan").ok()

    assert members(scim) == {"eng": ["ann", "bob", "cid", "dan"]}
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def enable_while_roles_unread(tmp_path: Path, monkeypatch, username: str, names=None) -> None:
    """Enable ``username`` again (through the library) while the directory cannot read
    its roles ``names`` (case-folded; None: any role)."""
    from idprov.errors import IdprovError
    from idprov.provisioning.directory import StoreDirectory

    readable = StoreDirectory.role_by_name

    def role_by_name(self, domain, name):
        if names is None or name.casefold() in names:
            raise IdprovError("the directory did not answer")
        return readable(self, domain, name)

    with monkeypatch.context() as patch:
        patch.setattr(StoreDirectory, "role_by_name", role_by_name)
        service = service_of(tmp_path)
        try:
            service.update_user(username, {"active": "true"})
        finally:
            service.close()


def service_of(tmp_path: Path):
    from idprov.config import load_config
    from idprov.provisioning.service import IdentityService

    return IdentityService(load_config(str(tmp_path / "idprov.yaml")))


def test_a_user_enabled_again_joins_its_groups_even_if_the_push_is_cut_after_it(
    cli, scim, tmp_path, monkeypatch
):
    """bob is enabled again at the target, and the process dies before his groups'
    rows are made (kill -9 after the user's record): the next push of eng, naming
    only cid, compares bob too (his record told the group, in its transaction)."""
    from idprov.provisioning.engine import Engine

    cli("role", "add", "eng").ok()
    cli("user", "add", "ann", "--role", "eng").ok()
    cli("user", "add", "bob", "--role", "eng").ok()
    cli("user", "add", "cid").ok()
    cli("user", "update", "bob", "-c", "active=false").ok()  # bob leaves eng there
    assert members(scim) == {"eng": ["ann"]}

    def killed(self, rows):
        raise SystemExit("killed after the user's record")

    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        patch.setattr(Engine, "_groups_after", killed)
        service_of(tmp_path).update_user("bob", {"active": "true"})
    assert members(scim) == {"eng": ["ann"]}

    cli("role", "assign", "eng", "cid").ok()

    assert members(scim) == {"eng": ["ann", "bob", "cid"]}
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_row_another_drainer_holds_is_pushed_again_after_a_user_joins_it(cli, scim, tmp_path):
    """Another drainer holds eng's row (naming cid) when bob is enabled again: bob's
    record names him in the row, and gives it a new version, so that the drainer's
    push takes him in and leaves the row for a push that compares every member."""
    from idprov.provisioning.results import OutboundReport

    cli("role", "add", "eng").ok()
    cli("user", "add", "ann", "--role", "eng").ok()
    cli("user", "add", "bob", "--role", "eng").ok()
    cli("user", "add", "cid").ok()
    cli("user", "update", "bob", "-c", "active=false").ok()
    assert load(cli, tmp_path, feed(["cid"], "eng"), "--no-push").exit_code == 0
    service = service_of(tmp_path)
    other = f"{socket.gethostname()}:{os.getpid()}:other-drainer"  # known to run
    (row,) = [r for r in service.state.outbox.rows() if r.kind == "role"]
    with service.state.transaction():
        (held,) = service.state.outbox.claim([row], other, 300)

    cli("user", "update", "bob", "-c", "active=true").ok()
    service.outbound._drain_claimed([held], OutboundReport(), None, None, [other])

    assert members(scim) == {"eng": ["ann", "bob", "cid"]}
    (left,) = [r for r in service.state.outbox.rows() if r.kind == "role"]
    assert (left.status, left.members_delta) == ("pending", 0)  # compared whole next
    cli("outbox", "retry").ok()
    assert cli("outbox", "list", "--json").items() == []
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_user_enabled_again_while_its_role_cannot_be_read_joins_the_group_later(
    cli, scim, tmp_path, monkeypatch
):
    """The directory does not answer for bob's roles as he is enabled again: his
    record tells every group idprov holds at the IdP, so the next push of eng (an
    assign naming cid) compares every member and puts bob back."""
    cli("role", "add", "eng").ok()
    cli("user", "add", "ann", "--role", "eng").ok()
    cli("user", "add", "bob", "--role", "eng").ok()
    cli("user", "add", "cid").ok()
    cli("user", "update", "bob", "-c", "active=false").ok()
    enable_while_roles_unread(tmp_path, monkeypatch, "bob")
    cli("role", "assign", "eng", "cid").ok()

    assert members(scim) == {"eng": ["ann", "bob", "cid"]}
    assert cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_user_enabled_again_rejoins_the_groups_that_can_be_read(cli, scim, tmp_path, monkeypatch):
    """bob holds eng and ops; ops cannot be read as he is enabled again: he rejoins eng
    in that push all the same (ops follows at its group's next push)."""

    for role in ("eng", "ops"):
        cli("role", "add", role).ok()
    for name in ("ann", "bob"):
        cli("user", "add", name, "--role", "eng", "--role", "ops").ok()
    cli("user", "update", "bob", "-c", "active=false").ok()
    assert members(scim) == {"eng": ["ann"], "ops": ["ann"]}

    enable_while_roles_unread(tmp_path, monkeypatch, "bob", {"ops"})

    assert members(scim)["eng"] == ["ann", "bob"]
    cli("user", "add", "cid").ok()
    cli("role", "assign", "ops", "cid").ok()  # ops's next push: compared whole
    assert members(scim) == {"eng": ["ann", "bob"], "ops": ["ann", "bob", "cid"]}
    assert cli("plan", "--detailed-exitcode").exit_code == 0
