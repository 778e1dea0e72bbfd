"""A cut import's re-run is judged by the deletion guard with what its cut run
judged, whichever way it is run: with ``--no-push`` (refused when the cut run's push
let part of the change through or held part of it), after `idp rename` of its IdP
(the journal's judgement moves with the name), and with the ``--allow-deletes`` an
uninterrupted run needed (what the cut run held is judged again with the rest).
Against the real SCIM server (scim2-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.inbound.csv_import import CsvImport, ImportOptions
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import edit_config, scim, seed  # noqa: F401 - fixture
from tests.test_import_guard_resume import LEAVERS, _file, _held_users, _import

TEN = [f"pl{i}" for i in range(1, 11)]
"""10 of the 30 staff users lose staff: over the guard once the second batch of 5 goes."""


def _cut_after(monkeypatch: pytest.MonkeyPatch, path: Path, batches: int) -> None:
    """Run the import of ``path`` (--mode update, batches of 5) and cut it (Ctrl-C)
    as it begins batch ``batches + 1``: the first ``batches`` were written and pushed."""
    original = CsvImport._write_batch
    calls = {"n": 0}

    def cut(self, rows):  # type: ignore[no-untyped-def]
        if calls["n"] == batches:
            raise KeyboardInterrupt
        calls["n"] += 1
        original(self, rows)

    monkeypatch.setattr(CsvImport, "_write_batch", cut)
    service = IdentityService(load_config())
    try:
        with pytest.raises(KeyboardInterrupt):
            CsvImport(service, path, ImportOptions(mode="update", batch_size=5)).run()
    finally:
        service.close()
    monkeypatch.setattr(CsvImport, "_write_batch", original)


def _ten(tmp_path: Path) -> Path:
    path = tmp_path / "leavers.csv"
    path.write_text("username,roles\n" + "".join(f"{name},\n" for name in TEN))
    return path


def _said(*runs) -> str:  # type: ignore[no-untyped-def]
    return " ".join("".join(r.stdout + r.stderr for r in runs).split())


def test_a_no_push_rerun_of_a_cut_import_that_pushed_part_is_refused(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """Uninterrupted, the import (10 of 30 deleted) lets its first batch go and holds
    the second. Cut after its first batch went and re-run with --no-push, the rest
    was left to the worker, which judged it alone: all 10 were deleted, nobody having
    given --allow-deletes. The --no-push re-run is refused, changing nothing; the
    re-run without it ends as the uninterrupted run."""
    seed(30)
    path = _ten(tmp_path)
    _cut_after(monkeypatch, path, 1)
    assert len(scim.users()) == 25
    rerun = cli("import", "users", str(path), "--mode", "update", "--batch-size", "5", "--no-push")
    said = _said(rerun)
    assert rerun.exit_code == 2, said
    assert (
        "leavers.csv: the cut import of this file pushed, and the deletion guard let part"
        " of its change through at scim" in said
    )
    assert "run the same import again without --no-push" in said
    assert "Traceback" not in said
    assert cli("outbox", "list", "--json").items() == []  # nothing written
    work = cli("outbox", "work", "--once")
    assert len(scim.users()) == 25, _said(work)
    # the re-run that pushes judges the rest with the first batch: as uninterrupted
    again = _import(cli, path)
    assert again.exit_code == 7, _said(again)
    assert len(scim.users()) == 25, _said(again)
    assert _held_users(cli) == sorted(TEN[5:])


def test_a_no_push_rerun_resumes_when_the_cut_run_let_nothing_destructive_go(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """A cut run whose pushes deleted nothing (harmless updates) leaves nothing to
    count: its --no-push re-run resumes, and the worker judges its rows whole."""
    seed(30)
    path = tmp_path / "titles.csv"
    path.write_text("username,title,roles\n" + "".join(f"{name},Clerk,staff\n" for name in TEN))
    _cut_after(monkeypatch, path, 1)
    rerun = cli("import", "users", str(path), "--mode", "update", "--batch-size", "5", "--no-push")
    assert rerun.exit_code == 0, _said(rerun)
    work = cli("outbox", "work", "--once")
    assert work.exit_code == 0, _said(work)
    titles = {u["userName"]: u.get("title") for u in scim.users()}
    assert all(titles[name] == "Clerk" for name in TEN), titles


def test_a_rerun_after_idp_rename_counts_what_went_under_the_old_name(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """The journal's judgement was kept under the IdP's old name: after `idp rename
    scim scim2`, the re-run judged scim2 alone (5 more users deleted, and its line
    counted 20 of 25 with 5 gone). It moves with the name."""
    seed(30)
    path = _file(tmp_path)
    _cut_after(monkeypatch, path, 1)
    assert len(scim.users()) == 25
    edit_config(tmp_path, "name: scim\n", "name: scim2\n")
    edit_config(tmp_path, "identity_providers: [scim]", "identity_providers: [scim2]")
    renamed = cli("idp", "rename", "scim", "scim2")
    assert renamed.exit_code == 0, renamed
    run = _import(cli, path)
    said = _said(run)
    assert run.exit_code == 7, said
    # as uninterrupted (and as the same re-run without the rename): 5 gone, 20 held
    assert len(scim.users()) == 25, said
    assert _held_users(cli) == sorted(LEAVERS[5:]), said
    assert (
        "leavers.csv will delete 25 users at scim2 (83% of its 30 users): over "
        "deletion_guard.max_percent (20%); its batches are judged as one change: 5 of them "
        "went before the guard tripped, the other 20 are held"
    ) in said


def test_a_rerun_with_the_needed_allowance_pushes_what_the_cut_run_held(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """The cut run tripped in its second batch (held) and was cut as it began the
    third. Re-run with --allow-deletes 25, what one uninterrupted run needed, the held
    rows stayed held (10 users left, exit 7, an `outbox release` to find); they are
    the same change, judged again with the rest: 5 left, exit 0."""
    seed(30)
    path = _file(tmp_path)
    _cut_after(monkeypatch, path, 2)
    assert len(scim.users()) == 25
    assert len(_held_users(cli)) == 5
    run = cli(
        "import", "users", str(path), "--mode", "update", "--batch-size", "5",
        "--allow-deletes", "25",
    )  # fmt: skip
    said = _said(run)
    assert len(scim.users()) == 5, said
    assert _held_users(cli) == [], said
    assert run.exit_code == 0, said


def test_a_rerun_with_a_smaller_allowance_judges_the_held_rows_with_the_rest(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """With --allow-deletes 12, one uninterrupted run lets 10 go (two batches) and
    holds the 15 after: so does the re-run of the cut run that held its second batch
    (counted with the first, then the third trips)."""
    seed(30)
    path = _file(tmp_path)
    _cut_after(monkeypatch, path, 2)
    run = cli(
        "import", "users", str(path), "--mode", "update", "--batch-size", "5",
        "--allow-deletes", "12",
    )  # fmt: skip
    said = _said(run)
    assert run.exit_code == 7, said
    assert len(scim.users()) == 20, said
    assert _held_users(cli) == sorted(LEAVERS[10:]), said


def test_a_rerun_with_the_same_allowance_keeps_what_the_cut_run_held(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """The same (no) allowance: the cut run's trip holds the rest, as uninterrupted."""
    seed(30)
    path = _file(tmp_path)
    _cut_after(monkeypatch, path, 2)
    run = _import(cli, path)
    assert run.exit_code == 7, _said(run)
    assert len(scim.users()) == 25
    assert _held_users(cli) == sorted(LEAVERS[5:])
