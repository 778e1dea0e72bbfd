"""The marks of changes no deletion guard judged whole yet (a command cut after its
commit, before its own push; `import --no-push`; the retry of a failed push that
lost its --allow-deletes) stay until every marked row of their IdP is judged
together: a push that leaves an IdP to the worker (``--no-wait``, ``blocking:
false``, `idprov serve`) judges its own change there, never clears another change's
mark; and a failed row judged with them keeps its schedule."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.peers.scim2 import Scim2Peer
from tests.test_guard import edit_config, scim, seed  # noqa: F401 - fixture
from tests.test_guard_cut_changes import TWELVE, _held_users, _killed_after_its_commit

NON_BLOCKING = ("    retry:", "    blocking: false\n    retry:")


def _marks(tmp_path: Path) -> dict[str, int]:
    db = sqlite3.connect(tmp_path / "data" / "idprov.db")
    try:
        return dict(db.execute("SELECT label, unjudged FROM outbox WHERE kind = 'user'"))
    finally:
        db.close()


def test_no_wait_edits_of_a_cut_change_do_not_let_the_worker_out_with_it_in_parts(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """`role unassign staff pl1..pl12` (over the guard) cut on another host after its
    commit; an IdP with ``blocking: false``; three `idprov --no-wait user update`
    of its users, which leave that IdP to the worker. Each edit judged the cut
    change's rows it met with the edit alone (3 deprovisions: under the guard) and
    cleared their mark: the worker's first batch, those three rows, was judged
    alone and went (3 of the 12 deleted, nobody having allowed it). The edits leave
    the marks; the worker judges the 12 whole and holds them."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    seed(30)
    edit_config(tmp_path, *NON_BLOCKING)
    _killed_after_its_commit(TWELVE, "another machine")
    for name in ("pl1", "pl10", "pl11"):  # the first three rows by id
        edit = cli("--no-wait", "user", "update", name, "-c", "title=x")
        assert edit.exit_code == 0, edit
    assert all(_marks(tmp_path)[name] for name in TWELVE), _marks(tmp_path)
    work = cli("outbox", "work", "--once")
    assert work.exit_code == 7, work
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)


def test_no_wait_edits_of_an_import_no_push_change_leave_it_to_be_judged_whole(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """`import --no-push` of 12 leavers of 30, then `--no-wait` edits of three of
    them at a ``blocking: false`` IdP: the worker judges the 12 whole (held), as it
    did before the edits cleared their marks."""
    monkeypatch.setattr("idprov.provisioning.outbound.WORK_BATCH", 3)
    seed(30)
    edit_config(tmp_path, *NON_BLOCKING)
    path = tmp_path / "leavers.csv"
    path.write_text("username,roles\n" + "".join(f"{n},\n" for n in TWELVE))
    cli("import", "users", str(path), "--mode", "update", "--no-push").ok()
    db = sqlite3.connect(tmp_path / "data" / "idprov.db")
    first = [r[0] for r in db.execute("SELECT label FROM outbox ORDER BY id LIMIT 3")]
    db.close()
    for name in first:
        edit = cli("--no-wait", "user", "update", name, "-c", "title=x")
        assert edit.exit_code == 0, edit
    work = cli("outbox", "work", "--once")
    assert work.exit_code == 7, work
    assert len(scim.users()) == 30
    assert _held_users(cli) == sorted(TWELVE)


def test_a_no_wait_change_judged_by_its_own_push_leaves_no_mark(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
):
    """A `--no-wait` unassign of 2 users at a ``blocking: false`` IdP was judged by its
    own push: its rows, left to the worker, carry no mark (a later push meeting one
    of them does not take the others), and the worker lets them go."""
    seed(30)
    edit_config(tmp_path, *NON_BLOCKING)
    cli("--no-wait", "role", "unassign", "staff", "pl1", "pl2", "--yes").ok()
    assert _marks(tmp_path) == {"pl1": 0, "pl2": 0}
    cli("outbox", "work", "--once").ok()
    assert len(scim.users()) == 28


def test_a_wholly_held_change_does_not_point_at_what_went(
    cli,
    scim: Scim2Peer,  # noqa: F811
):
    """A harmless edit held with a cut change (nothing of it went): the guard's line
    does not say that what it let through is reported above."""
    seed(30)
    _killed_after_its_commit(TWELVE, "another machine")
    edit = cli("user", "update", "pl1", "-c", "title=x")
    said = " ".join((edit.stdout + edit.stderr).split())
    assert edit.exit_code == 7 and " done" not in said, said
    assert "what it held waits in the outbox: check it" in said, said
    assert "what it let through is reported above" not in said, said


def test_failed_rows_judged_with_a_later_change_wait_for_their_retry(
    cli,
    scim: Scim2Peer,  # noqa: F811
    tmp_path: Path,
):
    """`role unassign staff pl1..pl12 --allow-deletes 12`, its push failed (the target
    down): the retries lost the allowance, to be judged whole by whoever meets them;
    the next is due in an hour. The administrator then raises the IdP's guard. A
    later `user update pl1` meets pl1's row and judges the 12 together (under the
    raised guard: they may go), but pushed only its own: the 11 others went with it,
    an hour before their retry. They stay failed, at their time, and go with the
    worker's retry (here `outbox retry`)."""
    from tests.peers.scim2 import free_port

    seed(30)
    edit_config(tmp_path, "max_backoff: 0.05}", "max_backoff: 0.05, row_initial_backoff: 3600}")
    closed = f"http://127.0.0.1:{free_port()}/v2"
    edit_config(tmp_path, scim.base_url, closed)  # the target is down
    down = cli("role", "unassign", "staff", *TWELVE, "--yes", "--allow-deletes", "12")
    assert down.exit_code == 6, down
    edit_config(tmp_path, closed, scim.base_url)
    edit_config(tmp_path, "    retry:", "    deletion_guard: {max_percent: 100}\n    retry:")
    cli("user", "update", "pl1", "-c", "title=x").ok()
    assert len(scim.users()) == 29  # pl1 only
    left = {r["label"]: r for r in cli("outbox", "list", "--json").items() if r["kind"] == "user"}
    assert sorted(left) == sorted(TWELVE[1:]), left
    assert {r["status"] for r in left.values()} == {"failed"}, left
    assert all(r["next_attempt_at"] for r in left.values()), left
    cli("outbox", "retry").ok()
    assert len(scim.users()) == 18
