"""The deletion guard on changes committed without the push that judges them
(`import --no-push`): however their rows are later pushed (with another command's
change, as stale rows, by the worker in batches, re-pushed after a race), they are
judged together, never a part at a time."""

from __future__ import annotations

from pathlib import Path

from tests.peers.scim2 import Scim2Peer
from tests.test_guard import scim, seed  # noqa: F401 - the fixture
from tests.test_sync import db


def _leavers_committed_without_a_push(cli, tmp_path: Path, count: int = 12) -> None:
    """30 users pushed; `import --no-push` takes the IdP's role from pl1..pl<count>
    (12: 40%, over the guard): committed, judged by no one yet."""
    seed(30)
    leave = tmp_path / "leave.csv"
    leave.write_text("username,roles\n" + "".join(f"pl{i},\n" for i in range(1, count + 1)))
    cli("import", "users", str(leave), "--mode", "update", "--no-push").ok()


def _six_minutes_pass(tmp_path: Path) -> None:
    """The clock moves on past the 300 s after which a command pushes another's pending
    rows as left over (simulated: the rows' stamps move back)."""
    with db(tmp_path) as conn:
        conn.execute(
            "UPDATE outbox SET"
            " updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-6 minutes'),"
            " enqueued_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-6 minutes')"
        )


def _held_users(cli) -> list[str]:
    held = cli("outbox", "list", "--status", "held", "--json").items()
    return sorted(r["label"] for r in held if r["kind"] == "user")


def test_stale_rows_of_a_change_without_a_push_are_not_let_out_in_parts(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
):
    """`import --no-push` takes the role from 12 of 30 (over the guard); six minutes
    later a second `import --no-push` sets the title of 3 of them (their rows fresh
    again), and `user update` edits a user in neither. That command pushed the other 9
    as left over, judged with its own change alone (under the guard's minimum), and
    the worker then the 3 (under it too): 12 users gone that nobody allowed. All 12
    are judged together and held."""
    _leavers_committed_without_a_push(cli, tmp_path)
    _six_minutes_pass(tmp_path)
    titles = tmp_path / "titles.csv"
    titles.write_text("username,title\n" + "".join(f"pl{i},x\n" for i in (1, 2, 3)))
    cli("import", "users", str(titles), "--mode", "update", "--no-push").ok()
    edit = cli("user", "update", "pl20", "-c", "title=z")
    assert edit.exit_code == 7, edit
    assert len(scim.users()) == 30
    cli("outbox", "work", "--once")
    assert len(scim.users()) == 30
    # the edit's own row is held with the change it was judged with (pushed alone, a
    # harmless edit lets a held change out a row at a time)
    assert _held_users(cli) == sorted([*(f"pl{i}" for i in range(1, 13)), "pl20"])


def test_an_unrelated_edit_after_five_minutes_holds_the_change_without_a_push_whole(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
):
    """Every row of the change without a push is left over after 300 s: the edit of a
    user outside it pushes them, judged together: held, none deleted."""
    _leavers_committed_without_a_push(cli, tmp_path)
    _six_minutes_pass(tmp_path)
    edit = cli("user", "update", "pl20", "-c", "title=z")
    assert edit.exit_code == 7, edit
    assert len(scim.users()) == 30
    # the edit's own row is held with the change it was judged with (pushed alone, a
    # harmless edit lets a held change out a row at a time)
    assert _held_users(cli) == sorted([*(f"pl{i}" for i in range(1, 13)), "pl20"])


def test_the_worker_judges_a_change_without_a_push_whole_before_its_first_batch(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """The worker claims rows a batch at a time (500; 10 here): an `import --no-push`
    of 30 rows that takes the role from 2 users in its first batch and 10 in its last
    (12 of 30, over the guard) had its first batch judged alone (2, under the guard's
    minimum) and pushed: 2 users deleted that nobody allowed, the other 10 held. Every
    row of that change is judged before the first batch goes: all 12 held."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 10)
    seed(30)
    leavers = {5, 10, *range(21, 31)}
    lines = [f"pl{i},x,{'' if i in leavers else 'staff'}\n" for i in range(1, 31)]
    change = tmp_path / "change.csv"
    change.write_text("username,title,roles\n" + "".join(lines))
    cli("import", "users", str(change), "--mode", "update", "--no-push").ok()
    work = cli("outbox", "work", "--once")
    assert len(scim.users()) == 30, work
    assert _held_users(cli) == sorted(f"pl{i}" for i in range(1, 31))  # the change, whole
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert all("will delete 12 users at scim" in (r["last_error"] or "") for r in held), held


def _every_role_pushed(tmp_path: Path) -> None:
    """Every role a group at scim; the guard holds a change removing over 8 members."""
    path = tmp_path / "idprov.yaml"
    guard = "deletion_guard: {memberships: {max_deletes: 8, max_percent: 100, min_deletes: 0}}"
    path.write_text(
        path.read_text().replace(
            "provisioning_roles: [staff]",
            f"provisioning_roles: [staff]\n    push_roles: all\n    {guard}",
        )
    )


def _members_at(peer: Scim2Peer) -> dict[str, int]:
    return {g["displayName"]: len(g.get("members") or []) for g in peer.groups()}


def _unassign_without_a_push() -> None:
    """A change committed without its push: 6 members out of eng and 6 out of ops."""
    from idprov.config import load_config
    from idprov.provisioning.service import IdentityService

    other = IdentityService(load_config())
    try:
        with other.unit_of_work(push=False) as uow:
            uow.unassign("eng", [f"pl{i}" for i in range(1, 7)])
            uow.unassign("ops", [f"pl{i}" for i in range(11, 17)])
    finally:
        other.close()


def test_a_role_row_pushed_again_carries_the_change_without_a_push_judged_whole(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """While `role assign eng pl21` pushes eng's group, a change committed without a
    push takes 6 members out of eng and 6 out of ops (12 removals, over the guard's 8).
    The assign pushed eng's row again (its version moved), judged alone (6): out, and
    ops's with it. Judged with every row of that change, both are held."""
    from idprov.connectors.scim2 import Scim2Connector

    _every_role_pushed(tmp_path)
    seed(30)
    for role, users in (("eng", range(1, 11)), ("ops", range(11, 21))):
        cli("role", "add", role).ok()
        cli("role", "assign", role, *(f"pl{i}" for i in users)).ok()
    original = Scim2Connector.change_members
    raced: list[bool] = []

    def change_members(self, *args, **kwargs):
        if not raced:  # committed while this push holds eng's row
            raced.append(True)
            _unassign_without_a_push()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Scim2Connector, "change_members", change_members)
    cli("role", "assign", "eng", "pl21")
    monkeypatch.setattr(Scim2Connector, "change_members", original)
    cli("outbox", "work", "--once")
    assert raced
    assert _members_at(scim) == {"staff": 30, "eng": 11, "ops": 10}
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert sorted(r["label"] for r in held if r["kind"] == "role") == ["eng", "ops"]


def test_a_harmless_edit_held_with_an_earlier_change_says_whose_change_it_waits_with(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
):
    """`user update pl1 -c title=x` after someone's `import --no-push` that takes the
    role from 12 of 30 (pl1 among them) is held with it, exit 7: it said only "will
    delete 12 users", as if the edit did. It says that it waits with an earlier change
    committed without its push, how many rows that is and since when."""
    _leavers_committed_without_a_push(cli, tmp_path)
    edit = cli("user", "update", "pl1", "-c", "title=x")
    assert edit.exit_code == 7, edit
    said = " ".join((edit.stdout + edit.stderr).split())
    assert "will delete 12 users at scim" in said
    assert "this change to scim waits with an earlier change committed without its push" in said
    # 12 more rows: 11 users and the group
    assert "(`import --no-push`: 12 more row(s), the first written at 20" in said
    unrelated = cli("user", "update", "pl20", "-c", "title=z")
    assert unrelated.exit_code == 0, unrelated  # not stale yet: the worker's
    assert "waits with" not in unrelated.stdout + unrelated.stderr
