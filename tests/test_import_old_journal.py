"""An import cut (kill -9) under an earlier release, whose journal notes no outbox rows,
and run again after the upgrade: it pushes what the cut run committed and did not send,
as that release's re-run did."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.inbound.csv_import import CsvImport, ImportOptions
from idprov.provisioning import outbound
from idprov.provisioning.outbound import Outbound
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import scim  # noqa: F401 - fixture

NEW = ["k7", "k8", "k9"]


def cut_while_pushing(path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Import ``path`` and stop it once its batch committed, before anything was sent
    (its rows stay pending, claimed by it); the owner of its claims."""

    def cut(self, rows, *args, **kwargs):
        raise KeyboardInterrupt

    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        patch.setattr(Outbound, "drain", cut)
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, ImportOptions(mode="create")).run()
        return svc.outbound.owner


def as_the_earlier_release_left_it(tmp_path: Path) -> None:
    """The journal row as an earlier release wrote it: lines written, not finished,
    and no ``judged`` (the column the upgrade added is NULL: no rows noted)."""
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db", isolation_level=None)
    try:
        conn.execute("UPDATE imports SET judged = NULL")
        [(lines, finished)] = conn.execute("SELECT lines_done, finished_at FROM imports")
        assert lines == 4 and finished is None  # the header is line 1
    finally:
        conn.close()


def test_a_rerun_of_an_import_an_earlier_release_cut_pushes_its_rows(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    cli("role", "add", "staff").ok()
    path = tmp_path / "hr.csv"
    path.write_text("username,email,roles\n" + "".join(f"{u},{u}@example.com,staff\n" for u in NEW))
    owner = cut_while_pushing(path, monkeypatch)
    as_the_earlier_release_left_it(tmp_path)
    gone = outbound.holder_gone  # the killed process no longer runs
    monkeypatch.setattr(outbound, "holder_gone", lambda h: h.startswith(owner) or gone(h))
    assert {r["label"] for r in cli("outbox", "list", "--json").items()} == {*NEW, "staff"}
    assert scim.users() == []

    run = cli("import", "users", str(path), "--mode", "create")
    assert run.exit_code == 0, run
    assert "did not note its outbox rows" in run.stderr and "scim: 4 done" in run.stdout
    assert sorted(u["userName"] for u in scim.users()) == NEW
    assert cli("outbox", "list", "--json").items() == []
    again = cli("import", "users", str(path), "--mode", "create", "--json")
    assert again.exit_code == 10  # the import is finished: its users exist now


def test_a_journal_of_this_release_notes_its_rows_from_the_start(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """An import of this release cut before its first batch committed noted no rows:
    its re-run does not take another change's pending rows as its own."""
    cli("role", "add", "staff").ok()
    path = tmp_path / "hr.csv"
    path.write_text("username,email,roles\n" + "".join(f"{u},{u}@example.com,staff\n" for u in NEW))
    with IdentityService(load_config()) as svc:
        with svc.state.transaction():
            svc.state.imports.start("hr.csv", "0" * 64, "{}", "ann", "resident")
        [run] = [svc.state.imports.unfinished("0" * 64, "{}")]
        assert run is not None and run.notes_rows and run.judged == {"rows": []}


@pytest.mark.parametrize("allow", [None, "25"])
def test_a_rerun_of_an_earlier_releases_cut_import_leaves_another_changes_rows_alone(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
    allow: str | None,
):
    """Another administrator's 25 deprovisions, committed and not pushed, were pushed
    with the old journal's re-run (every pending row, 29) and said as 'hr.csv will
    delete 25 users', on every held row too, though the file deletes nobody.
    Only the rows of the users the cut run's lines name (and their roles') are its,
    and a trip that holds another change's rows is not said as the file's."""
    from tests.test_guard import seed

    seed(30)
    path = tmp_path / "hr.csv"
    path.write_text("username,email,roles\n" + "".join(f"{u},{u}@example.com,staff\n" for u in NEW))
    owner = cut_while_pushing(path, monkeypatch)
    as_the_earlier_release_left_it(tmp_path)
    service = IdentityService(load_config())
    try:
        with service.unit_of_work(push=False) as uow:
            uow.unassign("staff", [f"pl{i}" for i in range(1, 26)])
    finally:
        service.close()
    gone = outbound.holder_gone
    monkeypatch.setattr(outbound, "holder_gone", lambda h: h.startswith(owner) or gone(h))
    args = ["import", "users", str(path), "--mode", "create"]
    run = cli(*args, *(["--allow-deletes", allow] if allow else []))
    said = " ".join(run.stderr.split())
    assert "hr.csv will delete" not in said, run
    # its 3 users and their role, not the state's 29 pending rows
    assert "were pushed with this run (4)" in said, run
    # the other change is judged whole, as with any push while it waits unjudged: its
    # deletes are held, on no allowance of the import's, and it is named as another's
    assert "waits with an earlier change committed without its push" in said, run
    assert len(scim.users()) == 30
    rows = cli("outbox", "list", "--json").items()
    assert sum(r["kind"] == "user" and r["label"].startswith("pl") for r in rows) == 25, rows
    assert not any("hr.csv" in (r["last_error"] or "") for r in rows), rows


def test_a_rerun_of_an_earlier_releases_cut_import_the_guard_judged_pushes_its_rows(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """An earlier release noted the guard's judgement of an import with deletes, and
    no rows ({allowance, judged, held_rows}): its re-run pushed nothing, exit 0, while
    the cut batch's 5 deletes waited in the outbox for `outbox retry`."""
    from tests.test_guard import seed

    seed(30)
    path = tmp_path / "five.csv"
    path.write_text("username,roles\n" + "".join(f"pl{i},\n" for i in range(1, 6)))

    def cut(self, rows, *args, **kwargs):
        raise KeyboardInterrupt

    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        patch.setattr(Outbound, "drain", cut)
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, ImportOptions(mode="update", batch_size=5)).run()
        owner = svc.outbound.owner
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db", isolation_level=None)
    try:  # what that release wrote: the judgement, no rows
        conn.execute("UPDATE imports SET judged = json_remove(judged, '$.rows')")
        [(judged,)] = conn.execute("SELECT judged FROM imports")
        assert "judged" in json.loads(judged) and "rows" not in json.loads(judged)
    finally:
        conn.close()
    gone = outbound.holder_gone
    monkeypatch.setattr(outbound, "holder_gone", lambda h: h.startswith(owner) or gone(h))
    cli("import", "users", str(path), "--mode", "update", "--allow-deletes", "5").ok()
    assert len(scim.users()) == 25
    assert cli("outbox", "list", "--json").items() == []
