"""The deletion guard on every destructive path: sync, CLI commands, the push of any
change (held in the outbox, released by an administrator), against the real SCIM
server (scim2-server) and, for reads that silently come back short, a real slapd."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from idprov.config import load_config
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_sync import write_config


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server.base_url)
    return scim2_server


def seed(count: int, role: str = "staff") -> None:
    """``count`` users holding ``role`` (the IdP's provisioning role), pushed in one go."""
    service = IdentityService(load_config())
    try:
        with service.unit_of_work() as uow:
            uow.add_role(role)
            for i in range(count):
                uow.add_user(f"pl{i + 1}", {"email": f"pl{i + 1}@example.com"}, roles=[role])
        assert uow.outbound is not None and uow.outbound.ok
    finally:
        service.close()


def members(cli, role: str = "staff") -> int:
    return cli("role", "show", role, "--json").json()["member_count"]


def edit_config(tmp_path: Path, old: str, new: str) -> None:
    """Change the configuration file as an administrator would, between commands."""
    path = tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace(old, new))


def groups_at(scim: Scim2Peer) -> list[str]:
    return sorted(g["displayName"] for g in scim.groups())


def synced_with_eng(cli, tmp_path: Path) -> None:
    """Three staff users and two eng ones, all pushed under [staff, eng] by a sync."""
    seed(3)
    cli("role", "add", "eng").ok()
    cli("user", "add", "e0", "--role", "eng").ok()
    cli("user", "add", "e1", "--role", "eng").ok()
    edit_config(tmp_path, "[staff]", "[staff, eng]")
    cli("sync").ok()


def test_role_unassign_over_the_guard_is_refused_off_a_terminal_and_changes_nothing(cli, scim):
    seed(30)
    users = [f"pl{i}" for i in range(1, 26)]
    error = cli("role", "unassign", "staff", *users, "--json").error(7)
    assert "will delete 25 users at scim (83% of its 30 users)" in error["message"]
    assert "--yes --allow-deletes 25" in error["hint"]
    assert members(cli) == 30 and len(scim.users()) == 30
    cli("role", "unassign", "staff", *users, "--yes", "--allow-deletes", "24", "--json").error(7)
    assert members(cli) == 30
    cli("role", "unassign", "staff", *users, "--yes", "--allow-deletes", "25").ok()
    assert members(cli) == 5 and len(scim.users()) == 5


def test_what_a_command_allowed_is_not_held_by_the_worker_that_pushes_it(cli, scim, tmp_path):
    """At an IdP the command does not wait for, the worker pushes its change: it judged
    the 25 deprovisions without the command's --allow-deletes, and held them all."""
    seed(30)
    edit_config(tmp_path, "[staff]\n", "[staff]\n    blocking: false\n")
    users = [f"pl{i}" for i in range(1, 26)]
    cli("--no-wait", "role", "unassign", "staff", *users, "--yes", "--allow-deletes", "25").ok()
    assert len(scim.users()) == 30  # left to the worker
    cli("outbox", "work", "--once").ok()
    assert len(scim.users()) == 5
    assert cli("outbox", "list", "--json").items() == []


def test_a_small_unassign_goes_through_without_a_question(cli, scim):
    seed(30)
    cli("role", "unassign", "staff", "pl1", "pl2").ok()
    assert len(scim.users()) == 28


def test_the_outbox_worker_judges_a_change_across_its_batches(cli, scim):
    """A change committed without a push (here 25 deprovisions, the admin having said
    yes) reaches the worker in batches (of 5 here, 500 by default): each batch alone
    is under the guard's minimum of 10, so judged alone all 25 would go. The rows of
    such a change are judged together before the first batch goes: all 25 held (the
    first batch went, judged alone, before that)."""
    seed(30)
    service = IdentityService(load_config())
    try:
        with service.unit_of_work(push=False) as uow:
            uow.unassign("staff", [f"pl{i}" for i in range(1, 26)])
        service.outbound.batch = 5
        report = service.outbound.work(once=True)
    finally:
        service.close()
    assert len(scim.users()) == 30
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert sorted(r["kind"] for r in held) == ["role"] + ["user"] * 25  # and the group's
    assert sum(report.held.values()) == 26
    assert all("will delete 25 users at scim" in (r["last_error"] or "") for r in held)
    assert all((r["last_error"] or "").count("will delete") == 1 for r in held)  # said once


def test_role_rename_that_would_deprovision_everyone_is_refused(cli, scim):
    seed(12)
    error = cli("role", "rename", "staff", "employees", "--json").error(7)
    assert "will delete 12 users at scim (100% of its 12 users)" in error["message"]
    assert cli("role", "show", "staff", "--json").json()["name"] == "staff"
    assert len(scim.users()) == 12


def test_a_small_role_rename_that_takes_members_out_of_scope_is_refused_too(cli, scim, tmp_path):
    """Under the guard's minimum (3 users) a rename of the provisioning role went
    through silently and deleted every account at the target: a rename reads as
    harmless. It is refused, saying why and how to go on, from every command."""
    seed(3)
    error = cli("role", "rename", "staff", "employees", "--json").error(7)
    assert "out of the scope of scim (3)" in error["message"]
    assert "provisioning_roles" in error["hint"] and "--allow-deletes 3" in error["hint"]
    assert cli("role", "show", "staff", "--json").json()["name"] == "staff"
    assert len(scim.users()) == 3
    edit_config(tmp_path, "[staff]", "[staff, employees]")
    cli("role", "rename", "staff", "employees").ok()  # in scope by its new name
    assert len(scim.users()) == 3 and [g["displayName"] for g in scim.groups()] == ["employees"]
    edit_config(tmp_path, "[staff, employees]", "[employees]")
    cli("role", "rename", "employees", "crew", "--yes", "--allow-deletes", "3").ok()
    assert scim.users() == []


def test_a_scope_narrowed_in_the_configuration_is_judged_whole_by_sync(cli, scim, tmp_path):
    """provisioning_roles [staff] -> [eng]: sync refuses to delete the 12 users. Any
    other command touching one of them deprovisioned it, each one under the guard's
    minimum, until those left were under it too; such deprovisions wait for sync."""
    seed(12)
    cli("role", "add", "eng").ok()
    edit_config(tmp_path, "[staff]", "[eng]")
    assert "will delete 12 users at scim" in cli("sync", "--json").error(7)["message"]
    held = cli("user", "update", "pl1", "-c", "title=Boss").fails(7)
    assert "provisioning_roles [eng, staff] since the last sync; now [eng]" in held
    assert "`idprov sync`" in held
    cli("role", "assign", "eng", "pl2").ok()  # in the new scope: no deprovision
    assert len(scim.users()) == 12
    cli("sync", "--allow-deletes", "11").ok()  # judged whole, accepted: pl1's row too
    assert [u["userName"] for u in scim.users()] == ["pl2"]
    assert cli("outbox", "list", "--json").json()["items"] == []
    cli("role", "unassign", "eng", "pl2").ok()  # the scope as synced: judged as usual
    assert scim.users() == []


def test_a_scope_widened_then_narrowed_again_is_judged_whole_and_not_released(cli, scim, tmp_path):
    """Users pushed under a widened scope are in it: a narrowing after it is a change
    of scope too (they were deleted one command at a time). And a release does not
    push them: releasing some left the rest under the guard's minimum, for a sync."""
    seed(3)
    cli("role", "add", "eng").ok()
    for name in ("e0", "e1", "e2"):
        cli("user", "add", name, "--role", "eng").ok()  # out of scope: not pushed
    edit_config(tmp_path, "[staff]", "[staff, eng]")
    cli("user", "update", "e0", "-c", "title=A").ok()  # and eng's group, with e1 and e2
    assert len(scim.users()) == 6
    edit_config(tmp_path, "[staff, eng]", "[staff]")
    held = cli("user", "update", "e0", "-c", "title=B").fails(7)
    assert "provisioning_roles [eng, staff] since the last sync; now [staff]" in held
    # release pushes what it may; these it holds again, whatever --allow-deletes says
    again = cli("outbox", "release", "--yes", "--allow-deletes", "1").fails(7)
    assert "`idprov sync`" in again
    [row] = cli("outbox", "list", "--json").json()["items"]
    assert (row["label"], row["status"]) == ("e0", "held")
    assert len(scim.users()) == 6


def test_a_scope_swapped_then_swapped_back_is_judged_whole_too(cli, scim, tmp_path):
    """[staff] -> [eng] is no widening, yet users were pushed under it: the record
    counts every scope pushed under since the last sync, so going back is seen."""
    seed(3)
    cli("role", "add", "eng").ok()
    cli("user", "add", "e0", "--role", "eng").ok()
    edit_config(tmp_path, "[staff]", "[eng]")
    cli("user", "update", "e0", "-c", "title=A").ok()  # e0 made under [eng]
    assert len(scim.users()) == 4
    edit_config(tmp_path, "[eng]", "[staff]")
    held = cli("user", "update", "e0", "-c", "title=B").fails(7)
    assert "provisioning_roles [eng, staff] since the last sync; now [staff]" in held
    assert len(scim.users()) == 4


def test_a_change_of_scope_holds_only_its_own_rows_and_never_a_disable(cli, scim, tmp_path):
    """One user the change of scope took out held every other row of the push at that
    IdP, and a worker's later batches too; and a user disabled here after the change
    stayed active at the target (an offboarding postponed until a sync)."""
    seed(3)
    cli("role", "add", "eng").ok()
    edit_config(tmp_path, "[staff]", "[staff, eng]")
    cli("user", "add", "e0", "--role", "eng").ok()
    edit_config(tmp_path, "[staff, eng]", "[staff]")
    rows = tmp_path / "rows.csv"
    rows.write_text("username,title\ne0,A\npl2,B\n")
    cli("import", "users", str(rows), "--mode", "update").fails(7)
    users = {u["userName"]: u for u in scim.users()}
    assert users["pl2"]["title"] == "B" and "e0" in users  # e0 held, pl2 pushed
    [row] = cli("outbox", "list", "--json").json()["items"]
    assert (row["label"], row["status"]) == ("e0", "held")
    cli("user", "update", "e0", "-c", "active=false").ok()  # its own change: deprovisioned
    assert "e0" not in {u["userName"] for u in scim.users()}


def test_a_group_a_change_of_scope_takes_out_is_left_to_sync(cli, scim, tmp_path):
    """[staff, eng] -> [staff]: eng is no longer pushed, and any command touching it
    deleted its group, one group being under the guard's minimum."""
    synced_with_eng(cli, tmp_path)
    assert groups_at(scim) == ["eng", "staff"]
    edit_config(tmp_path, "[staff, eng]", "[staff]")
    held = cli("role", "assign", "eng", "pl1").fails(7)
    assert "(eng)" in held and "`idprov sync`" in held
    assert groups_at(scim) == ["eng", "staff"]


def test_a_database_from_before_the_scope_record_takes_its_scope_from_a_sync(cli, scim, tmp_path):
    """An upgraded database holds users but no recorded scope: a push does not adopt
    whatever the configuration says then (a narrowing made with the upgrade would never
    be seen); the first sync records it."""
    from contextlib import closing

    from tests.test_sync import db

    seed(12)
    with closing(db(tmp_path)) as state:
        state.execute("UPDATE idp_health SET scope = NULL")
    cli("role", "add", "eng").ok()
    edit_config(tmp_path, "[staff]", "[eng]")
    cli("role", "assign", "eng", "pl1").ok()
    with closing(db(tmp_path)) as state:
        assert state.execute("SELECT scope FROM idp_health").fetchall() == [(None,)]
    cli("sync", "--json").error(7)
    cli("sync", "--allow-deletes", "11").ok()
    with closing(db(tmp_path)) as state:
        [(scope,)] = state.execute("SELECT scope FROM idp_health").fetchall()
    assert json.loads(scope) == {"provisioning_roles": ["eng"], "push_roles": "scoped"}


def test_groups_push_roles_stops_pushing_are_left_to_sync(cli, scim, tmp_path):
    """push_roles: all -> scoped is a change of scope too: the groups of roles that are
    no longer pushed were deleted by whichever command touched them."""
    seed(3)
    cli("role", "add", "eng").ok()
    cli("user", "add", "e0", "--role", "eng", "--role", "staff").ok()
    edit_config(tmp_path, "[staff]\n", "[staff]\n    push_roles: all\n")
    cli("sync").ok()
    assert groups_at(scim) == ["eng", "staff"]
    edit_config(tmp_path, "    push_roles: all\n", "")
    held = cli("role", "assign", "eng", "pl1").fails(7)
    assert "push_roles all since the last sync; now [staff], push_roles scoped" in held
    assert groups_at(scim) == ["eng", "staff"]


def test_a_role_rename_cannot_take_apart_a_change_of_scope(cli, scim, tmp_path):
    """eng's members were held for sync after [staff, eng] -> [staff]; renaming eng
    (to a name no scope names) made them the rename's own change, and deleted them
    and their group with exit 0: the rename is refused as one out of the scope."""
    seed(3)
    cli("role", "add", "eng").ok()
    cli("user", "add", "e0", "--role", "eng").ok()
    edit_config(tmp_path, "[staff]", "[staff, eng]")
    cli("sync").ok()
    edit_config(tmp_path, "[staff, eng]", "[staff]")
    cli("user", "update", "e0", "-c", "title=A").fails(7)
    error = cli("role", "rename", "eng", "engineering", "--json").error(7)
    assert "takes members out of the scope of scim (1)" in error["message"]
    assert len(scim.users()) == 4 and groups_at(scim) == ["eng", "staff"]
    cli("sync", "--allow-deletes", "2").ok()  # the change, judged whole, accepted
    assert len(scim.users()) == 3 and groups_at(scim) == ["staff"]
    assert cli("outbox", "list", "--json").json()["items"] == []  # nothing left held


def test_the_sync_that_accepts_a_change_of_scope_leaves_nothing_it_held(cli, scim, tmp_path):
    """eng's group row, held when [staff, eng] -> [staff] took it out, stayed held
    after the sync that took [eng] in, its group in line: held 1 in status, forever."""
    synced_with_eng(cli, tmp_path)
    edit_config(tmp_path, "[staff, eng]", "[staff]")
    cli("user", "delete", "e1", "--yes").fails(7)  # e1 goes; eng's group row is held
    [row] = cli("outbox", "list", "--json").json()["items"]
    assert (row["label"], row["status"]) == ("eng", "held")
    edit_config(tmp_path, "[staff]", "[eng]")
    cli("sync", "--allow-deletes", "4").ok()
    assert cli("outbox", "list", "--json").json()["items"] == []
    assert groups_at(scim) == ["eng"]


def deletes_held_with_a_harmless_join(cli) -> None:
    """30 users in staff; one change deletes 25 and puts pl30 in eng, made without
    asking (the library): all 28 of its rows are held at scim."""
    seed(30)
    cli("role", "add", "eng").ok()
    service = IdentityService(load_config())
    try:
        with service.unit_of_work() as uow:
            for i in range(1, 26):
                uow.delete_user(f"pl{i}")
            uow.assign("eng", ["pl30"])
    finally:
        service.close()
    assert uow.outbound is not None and uow.outbound.held == {"scim": 28}


def test_the_sync_that_accepts_a_held_change_pushes_the_harmless_rows_held_with_it(cli, scim):
    """25 deletes held every row of their push at scim, pl30's joining eng among them
    (nothing destructive of its own). The sync that accepts the deletes pushed what
    its plan named and left those rows held, until an `outbox release`."""
    deletes_held_with_a_harmless_join(cli)
    cli("sync", "--allow-deletes", "25").ok()
    assert len(scim.users()) == 5
    assert cli("outbox", "list", "--json").items() == []
    [status] = cli("status", "--json").items()
    assert status["outbox"] == {}


def test_a_held_row_still_destructive_after_the_sync_stays_held_saying_why(cli, scim):
    """The 25 deprovisions came between the sync's plan and its push: the plan did not
    judge them, so the sync leaves them held, with the guard's reason as it stands."""
    from idprov.provisioning.sync import apply_plan, compute_plan

    seed(30)
    service = IdentityService(load_config())
    try:
        plan = compute_plan(service)
        assert plan.empty
        service.unassign("staff", [f"pl{i}" for i in range(1, 26)])
        report = apply_plan(service, plan, "run-1", allow_deletes=5)
    finally:
        service.close()
    assert report.held == {"scim": 26}
    assert "will delete 25 users at scim" in report.guard[0]
    assert len(scim.users()) == 30
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert len(held) == 26
    assert all("will delete 25 users at scim" in r["last_error"] for r in held)


def test_a_scope_recorded_as_roles_alone_is_read_as_such(cli, scim, tmp_path):
    """The record's first form (the provisioning roles alone, before push_roles was in
    it) still tells a change of scope."""
    from contextlib import closing

    from tests.test_sync import db

    seed(3)
    with closing(db(tmp_path)) as state:
        state.execute("""UPDATE idp_health SET scope = '["staff"]'""")
    cli("role", "add", "eng").ok()
    edit_config(tmp_path, "[staff]", "[eng]")
    held = cli("user", "update", "pl1", "-c", "title=A").fails(7)
    assert "pushed under provisioning_roles [eng, staff] since the last sync" in held


def test_role_delete_says_what_it_deletes_remotely_and_no_changes_nothing(cli, scim):
    seed(5)
    run = cli("role", "delete", "staff", input="n\n")
    assert run.exit_code == 1
    assert "will delete 5 users at scim (100% of its 5 users)" in run.stderr
    assert "will delete 1 group at scim" in run.stderr
    assert members(cli) == 5 and len(scim.users()) == 5 and len(scim.groups()) == 1
    cli("role", "delete", "staff", "--yes").ok()  # 5 users: under the guard's minimum
    assert scim.users() == [] and scim.groups() == []


def test_user_delete_lists_its_remote_effects(cli, scim):
    seed(2)
    run = cli("user", "delete", "pl1", input="n\n")
    assert run.exit_code == 1 and "will delete 1 user at scim" in run.stderr
    assert "from groups" not in run.stderr  # leaving is part of the delete
    assert len(scim.users()) == 2


def test_a_change_made_without_asking_is_held_in_the_outbox_until_released(cli, scim):
    """The library (like an import, a SCIM request, a JIT login) cannot be asked: its
    push over the guard is held, visible, and released by an administrator."""
    seed(30)
    service = IdentityService(load_config())
    try:
        result = service.unassign("staff", [f"pl{i}" for i in range(1, 26)])
    finally:
        service.close()
    assert result.outbound is not None and result.outbound.held == {"scim": 26}
    assert "will delete 25 users at scim" in result.outbound.guard[0]
    assert len(scim.users()) == 30  # nothing was sent
    rows = cli("outbox", "list", "--status", "held", "--json").json()["items"]
    assert len(rows) == 26 and "deletion_guard.max_percent" in rows[0]["last_error"]
    cli("outbox", "work", "--once").ok()  # the worker leaves held rows alone
    cli("outbox", "retry").ok()
    assert len(scim.users()) == 30
    error = cli("outbox", "release", "--json").error(7)
    assert "--allow-deletes 25" in error["hint"]
    report = cli("outbox", "release", "--yes", "--allow-deletes", "25", "--json").json()
    assert report["ok"] and len(scim.users()) == 5
    assert cli("outbox", "list", "--json").json()["items"] == []
    for action in ("outbox.held", "outbox.release"):
        assert cli("log", "--action", action, "--json").json()["items"][0]["target"] == "scim"


def test_sync_counts_group_deletions(cli, scim, tmp_path):
    write_config(tmp_path, scim.base_url, "    push_roles: all\n")
    seed(3)
    for name in ("grp1", "grp2", "grp3", "grp4"):
        cli("role", "add", name).ok()
        cli("role", "assign", name, "pl1").ok()
    assert len(scim.groups()) == 5
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "idprov.db", isolation_level=None) as conn:
        conn.execute(
            "DELETE FROM user_roles WHERE role_id IN (SELECT id FROM roles WHERE name LIKE 'grp%')"
        )
        conn.execute("DELETE FROM roles WHERE name LIKE 'grp%'")
    error = cli("sync", "--json").error(7)
    assert "will delete 4 groups at scim (80% of its 5 groups)" in error["message"]
    assert "deletion_guard.groups.max_percent" in error["message"]
    assert len(scim.groups()) == 5
    cli("sync", "--allow-deletes", "4").ok()
    assert len(scim.groups()) == 1


def test_deprovisioned_users_leave_each_group_in_one_request(cli, scim, tmp_path):
    import httpx

    write_config(tmp_path, scim.base_url, "    push_roles: all\n")
    seed(60)
    cli("role", "add", "team").ok()
    cli("role", "assign", "team", *[f"pl{i}" for i in range(1, 61)]).ok()
    assert len(scim.groups()[0]["members"]) == 60

    sent: list[tuple[str, str]] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append((request.method, request.url.path.rsplit("/", 2)[-2]))
            return super().handle_request(request)

    service = IdentityService(load_config(), http_transport=Counting())
    service.allow_deletes = 60
    try:
        result = service.unassign("staff", [f"pl{i}" for i in range(1, 61)])
    finally:
        service.close()
    assert result.outbound is not None and result.outbound.ok
    assert sent.count(("DELETE", "Users")) == 60
    assert sent.count(("PATCH", "Groups")) <= 3  # team, staff: one each (was 120)
    assert scim.users() == [] and all(not g.get("members") for g in scim.groups())


def run_in_terminal(args: list[str], answer: bytes, tmp_path: Path) -> tuple[int, str]:
    """Run ``idprov ARGS`` in a pseudo-terminal, answer its question, return (exit
    code, what the person saw)."""
    import os
    import pty
    import sys
    import time

    idprov = str(Path(sys.executable).parent / "idprov")
    pid, fd = pty.fork()
    if pid == 0:  # the child: idprov on a terminal, in the test's directory
        os.chdir(tmp_path)
        os.execv(idprov, [idprov, *args])
    seen, asked = b"", False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break  # the child closed the terminal
        if not chunk:
            break
        seen += chunk
        if not asked and b"[y/N]" in seen:
            os.write(fd, answer)
            asked = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


@pytest.mark.parametrize("answer", [b"n\r", b"y\r"])
def test_on_a_terminal_an_unassign_over_the_guard_asks_first(cli, scim, tmp_path, answer):
    seed(30)
    users = [f"pl{i}" for i in range(1, 26)]
    code, seen = run_in_terminal(["role", "unassign", "staff", *users], answer, tmp_path)
    assert "this is over the deletion guard" in seen
    assert "will delete 25 users at scim (83% of its 30 users)" in seen
    if answer == b"n\r":
        assert code == 1 and "aborted" in seen
        assert members(cli) == 30 and len(scim.users()) == 30
    else:
        assert code == 0, seen
        assert members(cli) == 5 and len(scim.users()) == 5


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "non-blocking"])
def test_a_scim_request_over_the_guard_succeeds_and_its_push_is_held(
    cli, tmp_path, scim2_server, monkeypatch, blocking
):
    """A SCIM client cannot be asked: the change is made, the push waits for an admin.
    For a ``blocking: false`` IdP too: the request's rows are judged as one change,
    not left to the outbox worker, which judges them batch by batch (batches of 5
    under the guard's 10 would each pass, and delete all 12)."""
    from tests.test_serve_scim import new_group, new_user, patch, running, serve_config

    monkeypatch.setenv("CRM_TOKEN", "crm-token-5f0c1d2e")
    monkeypatch.setenv("HR_TOKEN", "hr-token-9a8b7c6d")
    monkeypatch.setenv("OUT_TOKEN", scim2_server.token)
    idps = f"""
  - name: target
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:OUT_TOKEN}}
    provisioning_roles: [staff]
    blocking: {"true" if blocking else "false"}"""
    config = serve_config(tmp_path, idps, "[target]")
    with running(config) as inbound:
        worker = inbound.local()
        worker.outbound.batch = 5
        ids = [new_user(inbound.client, f"user{i:02d}")["id"] for i in range(12)]
        group = new_group(inbound.client, "staff", ids)
        worker.outbound.work(once=True)
        assert len(scim2_server.users()) == 12
        emptied = patch(
            inbound.client,
            f"/Groups/{group['id']}",
            {"op": "replace", "path": "members", "value": []},
        )
        assert emptied.status_code in (200, 204), emptied.text
        assert "outbound=held:13" in inbound.log.getvalue()
        worker.outbound.work(once=True)
        assert len(scim2_server.users()) == 12
        held = inbound.local().outbox_rows(status="held")
        assert len(held) == 13 and "will delete 12 users at target" in (held[0].last_error or "")


def test_an_import_in_small_batches_is_judged_as_one_change(cli, scim, tmp_path):
    seed(30)
    csv = tmp_path / "leavers.csv"
    csv.write_text("username,roles\n" + "".join(f"pl{i},\n" for i in range(1, 26)))
    run = cli("import", "users", str(csv), "--mode", "update", "--batch-size", "5", "--json")
    assert run.exit_code == 7, run
    assert members(cli) == 5  # the local change is made
    assert len(scim.users()) >= 25  # at most the first batch went out, the rest is held
    assert len(cli("outbox", "list", "--status", "held", "--json").json()["items"]) >= 20
    cli("outbox", "release", "--yes", "--allow-deletes", "25").ok()
    assert len(scim.users()) == 5


def test_an_import_dry_run_says_what_the_guard_would_hold(cli, scim, tmp_path):
    """`import --dry-run` of a file that takes 25 of 30 users out of the IdP's
    provisioning role said all was well (exit 0), and its run held the change (exit
    7). It judges the rows' changes as the run's pushes do: exit 7, the effects and
    the --allow-deletes that accepts them; nothing is changed. Accepted, exit 0. A
    file that only edits titles has nothing to judge."""
    seed(30)
    csv = tmp_path / "leavers.csv"
    csv.write_text("username,roles\n" + "".join(f"pl{i},\n" for i in range(1, 26)))
    dry = ["import", "users", str(csv), "--mode", "update", "--dry-run"]
    run = cli(*dry, "--json")
    assert run.exit_code == 7, run
    guard = json.loads(run.stdout)["guard"]
    assert "delete 25 users at scim" in guard["message"] and guard["allow_deletes"] == 25
    shown = cli(*dry)
    assert shown.exit_code == 7, shown
    said = " ".join((shown.stdout + shown.stderr).split())
    assert "would hold these changes in the outbox (exit 7)" in said, said
    assert "--allow-deletes 25" in said, said
    assert members(cli) == 30 and len(scim.users()) == 30  # nothing changed
    assert cli(*dry, "--allow-deletes", "25", "--json").json()["guard"] is None
    titles = tmp_path / "titles.csv"
    titles.write_text("username,title\n" + "".join(f"pl{i},Dev\n" for i in range(1, 26)))
    cli("import", "users", str(titles), "--mode", "update", "--dry-run").ok()
    assert cli(*dry[:-1], "--json").exit_code == 7  # the run holds what the dry run said


def test_the_worker_holds_what_a_change_without_push_would_destroy(cli, scim, tmp_path):
    seed(30)
    csv = tmp_path / "leavers.csv"
    csv.write_text("username,roles\n" + "".join(f"pl{i},\n" for i in range(1, 26)))
    cli("import", "users", str(csv), "--mode", "update", "--no-push").ok()
    run = cli("outbox", "work", "--once", "--json")  # the 25 users, and the group they leave
    assert run.exit_code == 7 and json.loads(run.stdout)["held"] == {"scim": 26}
    assert len(scim.users()) == 30
    cli("sync", "--json").error(7)  # sync plans the same deprovisions: refused too
    cli("sync", "--allow-deletes", "25").ok()  # accepted: the held rows go with the plan
    assert len(scim.users()) == 5
    assert cli("outbox", "list", "--json").json()["items"] == []


def test_a_group_row_two_changes_share_goes_when_each_fits_in_its_own(cli, scim, tmp_path):
    """12 deprovisions allowed by their command, then one more user deleted (under the
    guard on its own), both left to the worker: the group's row carries both changes.
    Each change is judged as it was made: the worker held pl13 and the group as 'will
    delete 13 users (43%)', counting the 12 it had just pushed under their allowance.
    The group's row has the smaller allowance (none): the 12's leaving the group is
    theirs, judged with their rows, not counted again with it."""
    seed(30)
    edit_config(tmp_path, "[staff]\n", "[staff]\n    blocking: false\n")
    users = [f"pl{i}" for i in range(1, 13)]
    cli("--no-wait", "role", "unassign", "staff", *users, "--yes", "--allow-deletes", "12").ok()
    cli("--no-wait", "user", "delete", "pl13", "--yes").ok()  # 1 user: under the guard
    [group] = [r for r in cli("outbox", "list", "--json").items() if r["kind"] == "role"]
    assert group["allowed"] is None  # the smaller: the 12's does not cover the other
    cli("outbox", "work", "--once").ok()
    assert cli("outbox", "list", "--json").items() == []
    assert len(scim.users()) == 17
    [staff] = scim.groups()
    assert len(staff.get("members", [])) == 17


def test_rows_of_two_changes_are_each_held_with_their_own_count(cli, scim, tmp_path):
    """12 deprovisions allowed, then 10 more not allowed, both left to the worker: the
    10 are held saying 10, not 22 (the 12 went, under their allowance)."""
    seed(30)
    edit_config(tmp_path, "[staff]\n", "[staff]\n    blocking: false\n")
    first = [f"pl{i}" for i in range(1, 13)]
    cli("--no-wait", "role", "unassign", "staff", *first, "--yes", "--allow-deletes", "12").ok()
    service = IdentityService(load_config())
    try:
        with service.unit_of_work(push=False) as uow:
            for i in range(13, 23):
                uow.delete_user(f"pl{i}")
    finally:
        service.close()
    cli("outbox", "work", "--once").fails(7)
    assert len(scim.users()) == 18  # the 12 allowed went
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert sorted(r["label"] for r in held if r["kind"] == "user") == sorted(
        f"pl{i}" for i in range(13, 23)
    )
    reasons = {r["last_error"] for r in held}
    assert all("will delete 10 users at scim" in why for why in reasons), reasons


def test_an_allowance_does_not_outlive_a_failed_push(cli, scim, tmp_path):
    """12 deprovisions allowed, their push failed (the target down): the retry was
    pushed under that allowance, whatever the directory had become by then. Now the
    failed rows lose it, say so, and a retry over the guard is held for release."""
    from tests.peers.scim2 import free_port

    seed(30)
    edit_config(tmp_path, "[staff]\n", "[staff]\n    blocking: false\n")
    users = [f"pl{i}" for i in range(1, 13)]
    cli("--no-wait", "role", "unassign", "staff", *users, "--yes", "--allow-deletes", "12").ok()
    rows = cli("outbox", "list", "--json").items()
    assert len(rows) == 13 and {r["allowed"] for r in rows} == {12}  # shown, as it travels
    closed = f"http://127.0.0.1:{free_port()}/v2"
    edit_config(tmp_path, scim.base_url, closed)  # the target is down
    assert cli("outbox", "work", "--once").exit_code == 6
    failed = cli("outbox", "list", "--json").items()
    assert {(r["status"], r["allowed"]) for r in failed} == {("failed", None)}
    assert all("--allow-deletes 12 does not go with the retry" in r["last_error"] for r in failed)
    edit_config(tmp_path, closed, scim.base_url)
    assert cli("outbox", "retry").exit_code == 7  # judged afresh: 12 of 30, over the guard
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert len(held) == 13 and all("will delete 12 users at scim" in r["last_error"] for r in held)
    assert len(scim.users()) == 30
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert len(scim.users()) == 18


def test_a_sync_gives_its_rows_what_its_plan_needs_and_harmless_rows_nothing(cli, scim, tmp_path):
    """`sync --allow-deletes 500` stamped 500 on every row it enqueued or released, a
    harmless group row held beside the deletes included: a later change coalescing
    into one, or its retry, went out under 500. Now the rows of what the plan destroys
    carry what it needed (25), the others none."""
    deletes_held_with_a_harmless_join(cli)
    edit_config(tmp_path, "[staff]\n", "[staff]\n    blocking: false\n")  # left to the worker
    cli("--no-wait", "sync", "--allow-deletes", "500").ok()
    rows = {r["label"]: r for r in cli("outbox", "list", "--json").items()}
    assert {rows[f"pl{i}"]["allowed"] for i in range(1, 26)} == {25}
    assert rows["eng"]["allowed"] is None and rows["eng"]["status"] == "pending"
    cli("outbox", "work", "--once").ok()
    assert len(scim.users()) == 5
    assert cli("outbox", "list", "--json").items() == []


def test_a_command_gives_its_rows_what_it_was_judged_to_need_not_all_of_n(cli, scim, tmp_path):
    """`--allow-deletes 500` for a change that needs 12: the rows carry 12, so a later
    change coalescing into them is not let through under the other 488."""
    seed(30)
    edit_config(tmp_path, "[staff]\n", "[staff]\n    blocking: false\n")
    users = [f"pl{i}" for i in range(1, 13)]
    cli("--no-wait", "role", "unassign", "staff", *users, "--yes", "--allow-deletes", "500").ok()
    rows = cli("outbox", "list", "--json").items()
    assert len(rows) == 13 and {r["allowed"] for r in rows} == {12}


def two_idps(tmp_path: Path, scim: Scim2Peer) -> Scim2Peer:
    """IdP ``scim`` (blocking) and ``arch`` (``blocking: false``, at another tenant of the
    same server), both scoped to r1, r2, r3, the guard's minimum 3 users; 30 users: u01-u10
    hold r1 (u03, u06, u09 r2 too), u11-u20 r2, u21-u30 r3, pushed to both."""
    arch_url = scim.base_url.replace("/v2", "a/v2")  # another tenant: another target
    guard = "    deletion_guard: {min_deletes: 3}\n    provisioning_roles: [r1, r2, r3]\n"
    (tmp_path / "idprov.yaml").write_text(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\nidentity_providers:\n"
        f"  - name: scim\n    connector: scim2\n{guard}"
        f"    options: {{base_url: '{scim.base_url}', auth: bearer, token: env:SCIM_TOKEN}}\n"
        f"  - name: arch\n    connector: scim2\n    blocking: false\n{guard}"
        f"    options: {{base_url: '{arch_url}', auth: bearer, token: env:SCIM_TOKEN}}\n"
        "applications:\n  - name: resident\n    identity_providers: [scim, arch]\n"
    )
    service = IdentityService(load_config())
    try:
        with service.unit_of_work() as uow:
            for role in ("r1", "r2", "r3"):
                uow.add_role(role)
            for i in range(1, 31):
                roles = ["r1", "r2"] if i in (3, 6, 9) else [f"r{(i - 1) // 10 + 1}"]
                uow.add_user(f"u{i:02d}", {"email": f"u{i:02d}@example.com"}, roles=roles)
        assert uow.outbound is not None and uow.outbound.ok
    finally:
        service.close()
    with httpx.Client(base_url=arch_url, headers=dict(scim.client.headers)) as client:
        arch = Scim2Peer(arch_url, scim.token, client)
        assert len(arch.users()) == 30 and len(scim.users()) == 30
    return arch


def arch_users(arch: Scim2Peer) -> list[str]:
    with httpx.Client(base_url=arch.base_url, headers=dict(arch.client.headers)) as client:
        return sorted(u["userName"] for u in Scim2Peer(arch.base_url, arch.token, client).users())


LEAVERS = ["u03", "u06", "u09", "u22", "u23", "u25", "u26"]


@pytest.mark.parametrize("push", [True, False], ids=["pushed", "no-push"])
def test_a_change_coalescing_into_another_changes_allowed_rows_is_judged_whole(
    cli, scim, tmp_path, push
):
    """A trial's guard bypass: 10 taken out of r1 with --allow-deletes 7 (7 deprovisions),
    left to the worker at arch; then an import takes every role from 7 users (23%, over
    the guard), 3 of them among the 10. Their 3 rows, coalesced into the unassign's,
    were judged with its allowance, the import's other 4 alone (13%: under the guard),
    and the worker deleted those 4 at arch. The import is judged whole, at its push as
    at the worker: its 7 are held, the rows they share with the unassign and the
    groups they leave too (r1, r2, r3); the unassign's own 7 go under its allowance.
    The 3 the unassign shares with the import stay in r1 at arch until the hold is
    resolved: r1's row carries both changes, and a row does not record which change
    wants what (the safe side: nothing of the held change goes out)."""
    arch = two_idps(tmp_path, scim)
    unassigned = [f"u{i:02d}" for i in range(1, 11)]
    cli("--no-wait", "role", "unassign", "r1", *unassigned, "--yes", "--allow-deletes", "7").ok()
    rows = cli("outbox", "list", "--json").items()
    assert len(rows) == 11 and {(r["idp"], r["allowed"]) for r in rows} == {("arch", 7)}
    csv = tmp_path / "b.csv"
    csv.write_text("username,roles\n" + "".join(f"{u},\n" for u in LEAVERS))
    how = ["--json"] if push else ["--no-push", "--json"]
    run = cli("--no-wait", "import", "users", str(csv), "--mode", "update", *how)
    assert run.exit_code == (7 if push else 0), run
    if push:  # held at both, not "arch: 7 queued"
        assert json.loads(run.stdout)["outbound"]["held"] == {"scim": 10, "arch": 10}
    worked = cli("outbox", "work", "--once", "--json")
    held_now = json.loads(worked.stdout).get("held", {}).get("arch", 0)
    assert held_now == (0 if push else 10)  # the import's (if not held before), not the unassign's
    assert arch_users(arch) == sorted(["u03", "u06", "u09", *(f"u{i}" for i in range(11, 31))])
    held = cli("outbox", "list", "--idp", "arch", "--json").items()
    assert sorted(r["label"] for r in held) == ["r1", "r2", "r3", *LEAVERS]  # the import's
    assert {r["status"] for r in held} == {"held"}
    assert all("will delete 7 users at arch (23%" in r["last_error"] for r in held), held
    groups = {g["displayName"]: len(g.get("members", [])) for g in arch_groups(arch)}
    assert groups == {"r1": 3, "r2": 13, "r3": 10}  # r1: u03, u06, u09 wait with the import


def arch_groups(arch: Scim2Peer) -> list[dict]:
    with httpx.Client(base_url=arch.base_url, headers=dict(arch.client.headers)) as client:
        return Scim2Peer(arch.base_url, arch.token, client).groups()


def test_a_retry_held_says_so_once_and_a_held_row_shows_no_next_try(cli, scim, tmp_path):
    """`outbox retry` printed its '✋ scim: 13 held' line twice, and `outbox list` showed
    each held row as 'held (next try <a time past>)': a held row waits for its release."""
    from tests.peers.scim2 import free_port

    seed(30)
    edit_config(tmp_path, "[staff]\n", "[staff]\n    blocking: false\n")
    users = [f"pl{i}" for i in range(1, 13)]
    cli("--no-wait", "role", "unassign", "staff", *users, "--yes", "--allow-deletes", "12").ok()
    closed = f"http://127.0.0.1:{free_port()}/v2"
    edit_config(tmp_path, scim.base_url, closed)  # the target is down: the rows fail
    assert cli("outbox", "work", "--once").exit_code == 6
    assert all(r["next_attempt_at"] for r in cli("outbox", "list", "--json").items())
    edit_config(tmp_path, closed, scim.base_url)
    retried = cli("outbox", "retry")
    assert retried.exit_code == 7
    assert retried.stdout.count("✋ scim: 13 held by the deletion guard") == 1, retried.stdout
    listed = cli("outbox", "list")
    assert listed.stdout.count("held") >= 13 and "next try" not in listed.stdout, listed.stdout
    held = cli("outbox", "list", "--json").items()
    assert len(held) == 13 and {(r["status"], r["next_attempt_at"]) for r in held} == {
        ("held", None)
    }


def test_a_held_change_does_not_leak_out_through_later_harmless_edits(cli, scim, tmp_path):
    """An import taking roles from 25 of 30 users is held whole; a later `user update
    -c title=x` of each, harmless, turned its held row back to pending, judged alone
    (one deprovision, under the guard): ten edits deprovisioned ten users that nobody
    allowed. A row a change is held in stays held, with the later change in it."""
    seed(30)
    csv = tmp_path / "leavers.csv"
    csv.write_text("username,roles\n" + "".join(f"pl{i},\n" for i in range(1, 26)))
    assert cli("import", "users", str(csv), "--mode", "update", "--json").exit_code == 7
    assert len(scim.users()) == 30
    held = cli("outbox", "list", "--status", "held", "--json").items()
    for i in range(1, 11):
        edit = cli("user", "update", f"pl{i}", "-c", "title=x")
        assert edit.exit_code == 7, edit  # held with the change it joined, and says so
    assert len(scim.users()) == 30
    still = cli("outbox", "list", "--status", "held", "--json").items()
    assert [r["id"] for r in still] == [r["id"] for r in held]  # one change, still waiting
    assert all("will delete 25 users at scim" in (r["last_error"] or "") for r in still)
    released = cli("outbox", "release", "--yes", "--allow-deletes", "25", "--json")
    assert released.exit_code == 0, released
    assert len(scim.users()) == 5


def _active_at(scim, name: str) -> bool | None:
    """The account's ``active`` at the target (None: it has none there)."""
    return next((u.get("active", True) for u in scim.users() if u["userName"] == name), None)


def test_an_offboarding_of_a_held_user_goes_out_from_every_path(cli, scim, tmp_path):
    """A later change joins a held row and waits with it, but an offboarding never
    waits: a CSV row saying active=false, and a role unassign taking a user out of
    the IdP's scope, of users whose rows the guard held (25 emails removed), went
    out at once before rows stayed held; they must still."""
    seed(30)
    csv = tmp_path / "noemail.csv"
    csv.write_text("username,email\n" + "".join(f"pl{i},\n" for i in range(1, 26)))
    assert cli("import", "users", str(csv), "--mode", "update").exit_code == 7
    disable = tmp_path / "disable.csv"
    disable.write_text("username,active\npl1,false\n")
    cli("import", "users", str(disable), "--mode", "update").ok()
    assert _active_at(scim, "pl1") is False
    cli("role", "unassign", "staff", "pl2", "--yes").ok()
    assert _active_at(scim, "pl2") is None  # deprovisioned: out of the IdP's scope
    assert _active_at(scim, "pl3") is True  # the held change itself still waits


def _claimed_by_a_killed_command(where: str) -> str:
    """Claim every pending row for a push that never came: its command was killed
    (``kill -9``) after its commit, its claims left for the lease. ``where``: the
    command ran on this machine (a process that no longer runs) or on another (of
    whose processes nothing can be known). Returns the claim's owner."""
    import socket
    import subprocess
    import sys

    from idprov.provisioning.outbox import LEASE_SECONDS

    if where == "this machine":
        killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        killed.kill()
        killed.wait()
        owner = f"{socket.gethostname()}:{killed.pid}:0badc0de.1"
    else:
        owner = "another-host.example:4242:0badc0de.1"
    service = IdentityService(load_config())
    try:
        with service.state.transaction():
            ids = [r.id for r in service.state.outbox.rows(status="pending")]
            assert len(service.state.outbox.claim_ids(ids, owner, LEASE_SECONDS)) == len(ids)
    finally:
        service.close()
    return owner


def _lease_runs_out(owner: str) -> None:
    """The claims of ``owner`` as they are once their lease has run out."""
    service = IdentityService(load_config())
    try:
        with service.state.transaction():
            pending = [r.id for r in service.state.outbox.rows() if r.claimed_by == owner]
            service.state.outbox.claim_ids(pending, owner, lease=-1)
    finally:
        service.close()


def _emails_at(scim: Scim2Peer) -> int:
    """How many accounts at the target still have an email."""
    return sum(1 for u in scim.users() if u.get("emails"))


@pytest.mark.parametrize("where", ["this machine", "another machine"])
def test_a_killed_commands_change_is_not_let_out_under_a_later_allowance(
    cli, scim, tmp_path, where
):
    """An import blanking the email of 12 of 30 users (40%: over the guard), its
    command killed after its commit, before its push: its rows stay claimed for the
    lease, and a claimed row took a later change's allowance as it was ('the drainer
    holding the claim is pushing the change it carried': it was dead). An import with
    --allow-deletes 3 (3 leavers) that set the title of 3 of the 12 lent its 3 to
    their rows; the other 9 were judged alone, under the guard's minimum, and all 12
    emails went, which nobody allowed. A claim lends nothing unless its holder runs
    (on this machine; of another machine's, idprov cannot know: the safe side): the
    12 are judged together and held; the later import's leavers go."""
    seed(30)
    blank = tmp_path / "blank.csv"
    blank.write_text("username,email\n" + "".join(f"pl{i},\n" for i in range(1, 13)))
    cli("import", "users", str(blank), "--mode", "update", "--no-push").ok()
    owner = _claimed_by_a_killed_command(where)
    later = tmp_path / "later.csv"
    rows = [f"pl{i},x,staff\n" for i in (1, 2, 3)] + [f"pl{i},,\n" for i in (13, 14, 15)]
    later.write_text("username,title,roles\n" + "".join(rows))
    cli("import", "users", str(later), "--mode", "update", "--allow-deletes", "3")
    listed = {r["label"]: r for r in cli("outbox", "list", "--json").items()}
    if where == "another machine":  # its claims hold until the lease runs out
        assert {listed[f"pl{i}"]["allowed"] for i in range(1, 4)} == {None}
        _lease_runs_out(owner)
        cli("outbox", "work", "--once")
    assert len(scim.users()) == 27  # the later import's 3 leavers went
    assert _emails_at(scim) == 27  # and no email: the blanking is over the guard
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert sorted(r["label"] for r in held) == sorted(f"pl{i}" for i in range(1, 13))
    assert all(") of 12 users at scim (" in r["last_error"] for r in held), held
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert _emails_at(scim) == 15


def _blank_emails_held(cli, tmp_path: Path, count: int = 12) -> None:
    """30 users pushed; an import blanking the email of pl1..pl<count> (over the guard
    from 10 on: 33% and more), held whole."""
    seed(30)
    blank = tmp_path / "blank.csv"
    blank.write_text("username,email\n" + "".join(f"pl{i},\n" for i in range(1, count + 1)))
    assert cli("import", "users", str(blank), "--mode", "update").exit_code == 7


def test_a_role_taken_away_where_users_stay_does_not_let_a_held_change_out(cli, scim, tmp_path):
    """A role taken away is an offboarding, and an offboarding goes out at once even
    where the guard holds the user's row; but where the user stays (eng is not what the
    IdP's scope names: they keep staff), the push sends the user's whole state, the
    held change's blanked email in it: `role unassign eng` of 9 of the 12 whose email
    blanking was held sent 9 of them, judged with the unassign (under the guard's
    minimum), not with the rest of their change. There their rows wait with the held
    change; a user who does leave (staff taken away) still goes at once."""
    seed(30)
    cli("role", "add", "eng").ok()
    cli("role", "assign", "eng", *(f"pl{i}" for i in range(1, 10))).ok()
    blank = tmp_path / "blank.csv"
    blank.write_text("username,email\n" + "".join(f"pl{i},\n" for i in range(1, 13)))
    assert cli("import", "users", str(blank), "--mode", "update").exit_code == 7
    unassigned = cli("role", "unassign", "eng", *(f"pl{i}" for i in range(1, 10)), "--yes")
    assert unassigned.exit_code == 7, unassigned  # its users' rows wait, and it says so
    assert members(cli, "eng") == 0
    assert _emails_at(scim) == 30
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert sorted(r["label"] for r in held) == sorted(f"pl{i}" for i in range(1, 13))
    assert all(") of 12 users at scim (40%" in r["last_error"] for r in held), held
    cli("role", "unassign", "staff", "pl10", "--yes").ok()  # pl10 leaves: at once
    assert len(scim.users()) == 29 and _emails_at(scim) == 29
    cli("outbox", "release", "--yes", "--allow-deletes", "11").ok()
    assert _emails_at(scim) == 18


def test_an_offboarding_of_held_users_goes_with_its_own_allowance(cli, scim, tmp_path):
    """Disabling the 12 users whose email blanking the guard held, with --allow-deletes
    12 (40%: over the guard), was held anyway as 'will disable 12 users': their rows,
    held, had no allowance, and a row two changes share kept the smaller, none. The
    only way out was `outbox release --allow-deletes 12`, which pushed the blanking
    too. A held row an offboarding takes out (where its user leaves: the disable
    sends what was last sent, nothing of the held change) goes with the offboarding's
    allowance."""
    seed(30)
    blank = tmp_path / "blank.csv"
    blank.write_text("username,email\n" + "".join(f"pl{i},\n" for i in range(1, 13)))
    assert cli("import", "users", str(blank), "--mode", "update").exit_code == 7
    off = tmp_path / "off.csv"
    off.write_text("username,active\n" + "".join(f"pl{i},false\n" for i in range(1, 13)))
    cli("import", "users", str(off), "--mode", "update", "--allow-deletes", "12").ok()
    assert sum(1 for u in scim.users() if u.get("active") is False) == 12
    assert _emails_at(scim) == 30  # the disable sent nothing of the held change
    assert cli("outbox", "list", "--json").items() == []


def test_an_internal_role_taken_away_offboards_a_held_user_at_once(cli, scim, tmp_path):
    """`role unassign Internal/contractors c1`, taking c1 out of the IdP's scope, was
    not an offboarding: c1's row, held with a change blanking 12 emails, kept it, and
    c1 kept the account until that change was released."""
    edit_config(tmp_path, "[staff]", "[staff, Internal/contractors]")
    seed(30)
    cli("role", "add", "Internal/contractors").ok()
    cli("user", "add", "c1", "--claim", "email=c1@example.com").ok()
    cli("role", "assign", "Internal/contractors", "c1").ok()
    assert len(scim.users()) == 31
    blank = tmp_path / "blank.csv"
    names = ["c1", *(f"pl{i}" for i in range(1, 12))]
    blank.write_text("username,email\n" + "".join(f"{n},\n" for n in names))
    assert cli("import", "users", str(blank), "--mode", "update").exit_code == 7
    cli("role", "unassign", "Internal/contractors", "c1", "--yes").ok()
    assert sorted(u["userName"] for u in scim.users()) == sorted(f"pl{i}" for i in range(1, 31))
    assert _emails_at(scim) == 30  # the held change waits still
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert sorted(r["label"] for r in held) == sorted(f"pl{i}" for i in range(1, 12))


def test_an_account_an_administrator_disabled_is_judged_for_the_attributes_it_loses(
    cli, scim, tmp_path
):
    """12 accounts an administrator disabled at the target, then disabled here (idprov
    found them disabled: theirs, never enabled by idprov), then enabled here with
    their emails blanked: their push updates them, the blanked emails removed, and
    the guard counted nothing of an enable: 12 of 30 emails went unjudged."""
    seed(30)
    headers = {"Authorization": f"Bearer {scim.token}", "Content-Type": "application/scim+json"}
    disable = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": False}}],
    }
    leavers = [f"pl{i}" for i in range(1, 13)]
    for account in scim.users():
        if account["userName"] in leavers:
            url = f"{scim.base_url}/Users/{account['id']}"
            assert httpx.patch(url, json=disable, headers=headers, timeout=30).is_success
    off = tmp_path / "off.csv"
    off.write_text("username,active\n" + "".join(f"{n},false\n" for n in leavers))
    cli("import", "users", str(off), "--mode", "update", "--allow-deletes", "12").ok()
    back = tmp_path / "back.csv"
    back.write_text("username,active,email\n" + "".join(f"{n},true,\n" for n in leavers))
    back_run = cli("import", "users", str(back), "--mode", "update")
    assert _emails_at(scim) == 30
    assert back_run.exit_code == 7, back_run
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert len(held) == 12 and all(") of 12 users at scim (" in r["last_error"] for r in held)
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert _emails_at(scim) == 18


def test_an_attribute_removed_while_idprov_had_the_account_disabled_goes_at_its_enable(
    cli, scim, tmp_path
):
    """An account idprov disabled was enabled by sending it whole, from nothing: an
    attribute unset while it was disabled stayed at the target, and the ledger said it
    was gone (drift no push would ever mend)."""
    cli("role", "add", "staff").ok()
    cli("user", "add", "dora", "-c", "email=dora@example.com", "--role", "staff").ok()
    cli("user", "update", "dora", "-c", "active=false").ok()
    cli("user", "update", "dora", "--unset", "email").ok()
    cli("user", "update", "dora", "-c", "active=true").ok()
    [dora] = scim.users()
    assert dora["active"] is True
    assert not dora.get("emails")


def test_an_account_idprov_disabled_is_judged_for_the_attributes_its_enable_removes(
    cli, scim, tmp_path
):
    """12 accounts idprov disabled, then enabled here with their emails blanked: the
    enable takes the emails away at the target, and the guard counts them as for any
    update (it counted nothing of an enable of an account idprov had disabled)."""
    seed(30)
    leavers = [f"pl{i}" for i in range(1, 13)]
    off = tmp_path / "off.csv"
    off.write_text("username,active\n" + "".join(f"{n},false\n" for n in leavers))
    cli("import", "users", str(off), "--mode", "update", "--allow-deletes", "12").ok()
    assert sum(1 for u in scim.users() if u.get("active") is False) == 12
    back = tmp_path / "back.csv"
    back.write_text("username,active,email\n" + "".join(f"{n},true,\n" for n in leavers))
    back_run = cli("import", "users", str(back), "--mode", "update")
    assert back_run.exit_code == 7, back_run
    assert _emails_at(scim) == 30
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert len(held) == 12 and all(") of 12 users at scim (" in r["last_error"] for r in held)
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert _emails_at(scim) == 18
    assert all(u.get("active") is True for u in scim.users())


def _leavers_committed_without_a_push(cli, tmp_path: Path, count: int = 12) -> None:
    """30 users pushed; `import --no-push` takes the IdP's role from pl1..pl<count>
    (12: 40%, over the guard): committed, judged by no one yet."""
    seed(30)
    leave = tmp_path / "leave.csv"
    leave.write_text("username,roles\n" + "".join(f"pl{i},\n" for i in range(1, count + 1)))
    cli("import", "users", str(leave), "--mode", "update", "--no-push").ok()


def test_a_change_committed_without_a_push_is_not_let_out_by_later_edits(cli, scim, tmp_path):
    """A change committed with `import --no-push` (12 deprovisions of 30, over the
    guard) was pushed by any later command touching one of its users, judged with
    that command's change alone: three `user update -c title=x` each deprovisioned one
    (under the guard's minimum), and the worker then found 9 left, under it too: 12
    users gone that nobody allowed. A later command judges such a row with every row
    of that change: the 12 are held together, as the worker holds them."""
    _leavers_committed_without_a_push(cli, tmp_path)
    for i in (1, 2, 3):
        edit = cli("user", "update", f"pl{i}", "-c", "title=x")
        assert edit.exit_code == 7, edit  # held with the change it carries, and says so
    assert len(scim.users()) == 30
    cli("outbox", "work", "--once")
    assert len(scim.users()) == 30
    held = cli("outbox", "list", "--status", "held", "--json").items()
    users = sorted(r["label"] for r in held if r["kind"] == "user")
    assert users == sorted(f"pl{i}" for i in range(1, 13))
    assert all("will delete 12 users at scim" in (r["last_error"] or "") for r in held), held
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert len(scim.users()) == 18


def test_a_change_committed_without_a_push_goes_whole_with_a_later_edit_under_the_guard(
    cli, scim, tmp_path
):
    """Under the guard, the change committed without a push goes out whole with the
    later command that touches one of its users (judged together, as the worker would)."""
    _leavers_committed_without_a_push(cli, tmp_path, count=3)
    cli("user", "update", "pl1", "-c", "title=x").ok()
    assert len(scim.users()) == 27
    assert cli("outbox", "list", "--json").items() == []


def test_a_change_committed_without_a_push_is_not_judged_in_parts_under_an_allowance(
    cli, scim, tmp_path
):
    """`import --no-push` blanks 12 of 30 emails; a later import with --allow-deletes 3
    (3 leavers) sets the title of 3 of the 12: their rows were judged with its change
    (3 blanked emails, under its allowance) and went; the worker then found 9, under
    the guard's minimum: every email went. The 12 are judged together, and held."""
    seed(30)
    blank = tmp_path / "blank.csv"
    blank.write_text("username,email\n" + "".join(f"pl{i},\n" for i in range(1, 13)))
    cli("import", "users", str(blank), "--mode", "update", "--no-push").ok()
    later = tmp_path / "later.csv"
    rows = [f"pl{i},x,staff\n" for i in (1, 2, 3)] + [f"pl{i},,\n" for i in (13, 14, 15)]
    later.write_text("username,title,roles\n" + "".join(rows))
    run = cli("import", "users", str(later), "--mode", "update", "--allow-deletes", "3")
    assert run.exit_code == 7, run
    cli("outbox", "work", "--once")
    assert len(scim.users()) == 27  # the later import's 3 leavers went
    assert _emails_at(scim) == 27  # and no email of the 12
    held = cli("outbox", "list", "--status", "held", "--json").items()
    users = sorted(r["label"] for r in held if r["kind"] == "user")
    assert users == sorted(f"pl{i}" for i in range(1, 13))
    assert all(") of 12 users at scim (" in r["last_error"] for r in held), held


@pytest.fixture()
def pg_scim(tmp_path: Path, scim2_server: Scim2Peer, postgres, monkeypatch) -> Scim2Peer:
    """The scim IdP, with idprov's state and the userstore on PostgreSQL."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    keys = f"url: '{postgres.url}', password: 'file:{secret}', sslmode: disable"
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
state: {{{keys}, schema: idprov}}
userstores:
  - {{domain: PRIMARY, type: postgres, {keys}, schema: directory}}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{scim2_server.base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: [staff]
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")
    monkeypatch.setenv("IDPROV_CONFIG", str(tmp_path / "idprov.yaml"))
    return scim2_server


def test_rows_a_worker_holds_while_an_offboarding_is_written_stay_held(
    cli, pg_scim, tmp_path, monkeypatch
):
    """`role unassign eng` of 9 users (eng is not the IdP's scope: they stay there)
    read whether their rows were held, then wrote them; a worker (another process, on
    a PostgreSQL state) that held them in between (the 12 emails an `import --no-push`
    blanks) saw its hold undone: the unassign set them back to pending and pushed 9
    blanked emails. Whether a row stays held is decided where it is written."""
    from idprov.provisioning.outbox import Outbox

    seed(30)
    cli("role", "add", "eng").ok()
    cli("role", "assign", "eng", *(f"pl{i}" for i in range(1, 10))).ok()
    blank = tmp_path / "blank.csv"
    blank.write_text("username,email\n" + "".join(f"pl{i},\n" for i in range(1, 13)))
    cli("import", "users", str(blank), "--mode", "update", "--no-push").ok()
    original = Outbox.enqueue_many
    worked = []

    def enqueue_many(self, idps, kind, *args, **kwargs):
        if kind == "user" and not worked:  # the worker, in its own transaction, first
            worker = IdentityService(load_config())
            try:
                worked.append(worker.outbound.work(once=True))
            finally:
                worker.close()
        return original(self, idps, kind, *args, **kwargs)

    monkeypatch.setattr(Outbox, "enqueue_many", enqueue_many)
    service = IdentityService(load_config())
    try:
        service.unassign("eng", [f"pl{i}" for i in range(1, 10)])
    finally:
        service.close()
    monkeypatch.setattr(Outbox, "enqueue_many", original)
    assert worked and worked[0].held == {"scim": 12}
    assert _emails_at(pg_scim) == 30
    held = cli("outbox", "list", "--status", "held", "--json").items()
    users = sorted(r["label"] for r in held if r["kind"] == "user")
    assert users == sorted(f"pl{i}" for i in range(1, 13))
