"""A cut import's re-run pushes, as its own change, only the outbox rows it wrote that
are still its change: a later change coalesced into one of its rows (one row per user
and IdP) makes the row that change's, and the re-run leaves it to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.inbound.csv_import import CsvImport, ImportOptions
from idprov.provisioning import outbound
from idprov.provisioning.outbound import Outbound
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import scim, seed  # noqa: F401 - fixture


def cut_import(monkeypatch: pytest.MonkeyPatch, path: Path, owners: list[str], **opts) -> None:
    """Import ``path``, stopped (Ctrl-C) once its batch committed, before it sent anything."""

    def cut(self, rows, *args, **kwargs):
        raise KeyboardInterrupt

    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        patch.setattr(Outbound, "drain", cut)
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, ImportOptions(**opts)).run()
        owners.append(svc.outbound.owner)


def delete_cut_before_its_push(monkeypatch: pytest.MonkeyPatch, names, owners) -> None:
    """A `user delete` of ``names`` committed and cut before it pushed."""
    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        patch.setattr(IdentityService, "push", lambda *a, **k: None)
        with svc.unit_of_work() as uow:
            for name in names:
                uow.delete_user(name)
        owners.append(svc.outbound.owner)


def test_a_rerun_does_not_take_another_changes_deletes_coalesced_into_its_rows(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """The cut import set the title of pl1..pl5 (rows committed, not sent); a `user
    delete` of pl1..pl12 was then cut before its push: its rows of pl1..pl5 are the
    import's rows. The re-run said 'titles.csv will delete 12 users', counted them
    again with the other change, and blamed titles.csv on every held row; the file
    deletes nobody."""
    seed(30)
    path = tmp_path / "titles.csv"
    path.write_text("username,title\n" + "".join(f"pl{i},Eng\n" for i in range(1, 6)))
    owners: list[str] = []
    cut_import(monkeypatch, path, owners, mode="update", batch_size=5)
    delete_cut_before_its_push(monkeypatch, [f"pl{i}" for i in range(1, 13)], owners)
    gone = outbound.holder_gone  # the cut processes no longer run
    monkeypatch.setattr(
        outbound, "holder_gone", lambda h: any(h.startswith(o) for o in owners) or gone(h)
    )
    run = cli("import", "users", str(path), "--mode", "update", "--batch-size", "5")
    said = " ".join((run.stdout + run.stderr).split())
    assert "titles.csv will delete" not in said, said
    rows = cli("outbox", "list", "--json").items()
    assert not any("titles.csv" in (r["last_error"] or "") for r in rows), rows
    assert len(scim.users()) == 30  # nobody gave --allow-deletes for the 12 deletes
    # the delete's rows wait for their own change's judgement, all 12 of them
    assert sum(r["kind"] == "user" for r in rows) == 12, rows


def test_a_finished_import_keeps_no_outbox_rows_in_its_journal(
    cli,
    tmp_path: Path,
    scim: Scim2Peer,  # noqa: F811
):
    """A finished import's journal kept its last batch's outbox row ids for good (35 KB
    for a batch of 5,000, each night): no re-run pushes them."""
    import json
    import sqlite3

    path = tmp_path / "hr.csv"
    cli("role", "add", "staff").ok()
    path.write_text("username,title,roles\n" + "".join(f"fj{i},Eng,staff\n" for i in range(20)))
    cli("import", "users", str(path), "--batch-size", "5").ok()
    assert len(scim.users()) == 20
    conn = sqlite3.connect(tmp_path / "data" / "idprov.db")
    try:
        [(judged, finished)] = conn.execute("SELECT judged, finished_at FROM imports")
    finally:
        conn.close()
    assert finished is not None and json.loads(judged)["rows"] == []
