"""The deletion guard on an import of several batches: the import is one change,
judged across its batches and across its re-run after a kill (``kill -9``, an OOM
kill, a lost database), against the real SCIM server (scim2-server). Its messages
say what went, what is held, with counts that match, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from idprov.config import load_config
from idprov.inbound.csv_import import CsvImport, ImportOptions
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer
from tests.test_guard import scim, seed  # noqa: F401 - fixture

LEAVERS = [f"pl{i}" for i in range(1, 26)]
"""25 of the 30 staff users lose staff: over the guard (10 users and 20% from 10 on)."""


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "leavers.csv"
    path.write_text("username,roles\n" + "".join(f"{name},\n" for name in LEAVERS))
    return path


def _held_users(cli) -> list[str]:
    held = cli("outbox", "list", "--status", "held", "--json").items()
    return sorted(r["label"] for r in held if r["kind"] == "user")


def _import(cli, path: Path):
    return cli("import", "users", str(path), "--mode", "update", "--batch-size", "5")


def test_an_import_tripping_mid_way_says_what_went_and_what_is_held_once(
    cli,
    tmp_path: Path,
    scim: Scim2Peer,  # noqa: F811
):
    """Batch 1 (5 deletes, under the guard's minimum) goes, batch 2 trips, the rest
    is held: the message said "will delete 10 users" (while 20 were held and the file
    takes 25), "nothing was sent" after "5 done", and came once per later batch."""
    seed(30)
    run = _import(cli, _file(tmp_path))
    assert run.exit_code == 7, run
    assert len(scim.users()) == 25
    assert len(_held_users(cli)) == 20
    assert "scim: 21 held" in run.stdout  # 20 users and staff's group, each once
    said = run.stdout + run.stderr
    assert (
        "leavers.csv will delete 25 users at scim (83% of its 30 users): over "
        "deletion_guard.max_percent (20%); its batches are judged as one change: 5 of them "
        "went before the guard tripped, the other 20 are held"
    ) in " ".join(said.split())
    assert "will delete 10 users" not in said
    assert " ".join(said.split()).count("will delete") == 1  # said once
    assert "nothing was sent" not in said  # 5 were
    assert "what it held waits in the outbox" in " ".join(said.split())


def test_an_import_killed_after_its_first_batch_is_judged_whole_by_its_rerun(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """Killed after its first batch went (5 deletes), the import run again as the
    README says judged only its remaining 20 rows: 5 more went, each batch of the
    rest judged with those alone (with batches of 60 and max_deletes 100, 150
    deletes went out, all of them). The re-run counts what the cut run let through:
    it ends as an uninterrupted run does, 5 deleted and 20 held, exit 7."""
    seed(30)
    path = _file(tmp_path)
    original = CsvImport._write_batch
    calls = {"n": 0}

    def killed_after_one(self: CsvImport, rows: list) -> None:
        if calls["n"] == 1:
            raise KeyboardInterrupt  # kill -9 once the first batch was written and pushed
        calls["n"] += 1
        original(self, rows)

    monkeypatch.setattr(CsvImport, "_write_batch", killed_after_one)
    service = IdentityService(load_config())
    try:
        with pytest.raises(KeyboardInterrupt):
            options = ImportOptions(mode="update", batch_size=5)
            CsvImport(service, path, options).run()
    finally:
        service.close()
    assert len(scim.users()) == 25  # the first batch went
    monkeypatch.setattr(CsvImport, "_write_batch", original)

    run = _import(cli, path)
    assert run.exit_code == 7, run
    assert "already imported (resumed)" in run.stdout or "5" in run.stdout
    assert len(scim.users()) == 25  # nothing more went: 20 held, as uninterrupted
    assert _held_users(cli) == sorted(LEAVERS[5:])
    said = " ".join((run.stdout + run.stderr).split())
    assert "leavers.csv will delete 25 users at scim" in said
    assert "5 of them went before the guard tripped, the other 20 are held" in said


def test_what_the_cut_run_let_through_counts_against_the_reruns_allowance(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """What the cut run let through counts against the re-run's --allow-deletes: 20
    covers the cut run's 5 and 15 more, not the import's last 5 (judged alone, the
    re-run's 20 rows all went under it, 25 in all)."""
    seed(30)
    path = _file(tmp_path)
    original = CsvImport._write_batch
    calls = {"n": 0}

    def killed_after_one(self: CsvImport, rows: list) -> None:
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        original(self, rows)

    monkeypatch.setattr(CsvImport, "_write_batch", killed_after_one)
    service = IdentityService(load_config())
    try:
        with pytest.raises(KeyboardInterrupt):
            CsvImport(service, path, ImportOptions(mode="update", batch_size=5)).run()
    finally:
        service.close()
    monkeypatch.setattr(CsvImport, "_write_batch", original)
    calls["n"] = 0
    run = cli(
        "import", "users", str(path), "--mode", "update", "--batch-size", "5",
        "--allow-deletes", "20",
    )  # fmt: skip
    assert run.exit_code == 7, run
    assert len(scim.users()) == 10  # 5 + 15 let through under 20; the last 5 held
    assert _held_users(cli) == sorted(LEAVERS[20:])


def test_an_unrelated_add_joining_a_held_group_says_it_waits_with_the_held_change(
    cli,
    tmp_path: Path,
    scim: Scim2Peer,  # noqa: F811
):
    """After the import's mass removal was held (staff's group row with it), `user add
    h1 --role staff` said "will delete 25 users" as if it were its own change, though
    h1's account was made: it says that its change to the group waits with the held
    one, and exits 7 (part of its change is held: `idprov outbox release`)."""
    seed(30)
    assert _import(cli, _file(tmp_path)).exit_code == 7
    run = cli("user", "add", "h1", "-c", "email=h1@example.com", "--role", "staff")
    assert run.exit_code == 7, run
    assert "h1" in {u["userName"] for u in scim.users()}
    said = " ".join((run.stdout + run.stderr).split())
    assert "this change to scim (staff) waits with an earlier change the deletion guard" in said
    # the earlier change's reason is the import's whole count, as `outbox list` gives it
    assert "and goes out with it: leavers.csv will delete 25 users at scim" in said
    held = cli("outbox", "list", "--status", "held", "--json").items()
    assert {r["last_error"] for r in held} == {
        "leavers.csv will delete 25 users at scim (83% of its 30 users): over "
        "deletion_guard.max_percent (20%); its batches are judged as one change: 5 of them "
        "went before the guard tripped, the other 20 are held"
    }


def test_an_import_cut_by_a_lost_state_database_is_judged_whole_by_its_rerun(
    cli,
    tmp_path: Path,
    postgres,
    write_config,
    scim2_server: Scim2Peer,
    monkeypatch: pytest.MonkeyPatch,
):
    """State and users in PostgreSQL: the database ends the import's session while it
    records its second batch (a restart), after the first batch's 5 deletes went. The
    re-run the hint asks for judged its 20 rows alone and deleted them all, exit 0; it
    counts the cut run's 5 (noted in the journal before they were sent) and holds
    the rest, exit 7, as one uninterrupted run does."""
    from tests.test_state_postgres import shared_config

    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    text = shared_config(postgres, tmp_path, scim2_server)
    config = write_config(
        text.replace("    blocking: false\n", "    provisioning_roles: [staff]\n")
    )
    with IdentityService(load_config(str(config))) as service, service.unit_of_work() as uow:
        uow.add_role("staff")
        for i in range(30):
            uow.add_user(f"pl{i + 1}", {"email": f"pl{i + 1}@example.com"}, roles=["staff"])
    assert len(scim2_server.users()) == 30
    postgres.execute(
        "CREATE FUNCTION idprov.cut() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.action = 'user.import' AND strpos(NEW.details, '\"pl6\"') > 0 THEN"
        " PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$"
    )
    postgres.execute(
        "CREATE TRIGGER cut BEFORE INSERT ON idprov.audit FOR EACH ROW"
        " EXECUTE FUNCTION idprov.cut()"
    )
    path = _file(tmp_path)
    assert _import(cli, path).exit_code == 1  # the connection was lost
    assert len(scim2_server.users()) == 25  # the first batch went
    postgres.execute("DROP TRIGGER cut ON idprov.audit")

    run = _import(cli, path)
    assert run.exit_code == 7, run
    assert len(scim2_server.users()) == 25
    assert _held_users(cli) == sorted(LEAVERS[5:])
    said = " ".join((run.stdout + run.stderr).split())
    assert "5 of them went before the guard tripped, the other 20 are held" in said


def test_leavers_counted_in_first_are_not_said_to_have_gone_before_the_trip(
    cli,
    tmp_path: Path,
    scim: Scim2Peer,  # noqa: F811
):
    """With --missing, the leavers (pl29, pl30) are counted with the first batch before
    they are written: the message counted them among what went before the trip,
    though they are disabled after the rows, and held with them."""
    seed(30)
    path = tmp_path / "hr.csv"
    rows = [f"pl{i}," for i in range(1, 21)] + [f"pl{i},staff" for i in range(21, 29)]
    path.write_text("username,roles\n" + "\n".join(rows) + "\n")
    run = cli(
        "import", "users", str(path), "--mode", "update", "--batch-size", "5",
        "--domain", "PRIMARY", "--missing", "disable",
    )  # fmt: skip
    assert run.exit_code == 7, run
    assert len(scim.users()) == 25  # the first batch's 5
    assert len(_held_users(cli)) == 17  # the other 15 leaving staff, and the 2 leavers
    said = " ".join((run.stdout + run.stderr).split())
    assert "hr.csv will deprovision 22 users at scim" in said
    assert "5 of them went before the guard tripped, the other 17 are held" in said


def test_a_rerun_judges_as_its_own_only_the_rows_its_cut_run_wrote(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scim: Scim2Peer,  # noqa: F811
):
    """Re-run after a Ctrl-C that cut its push, the import pushed every pending row of
    the state as its own: another change's 8 deletes (a `user delete` cut before its
    push) were counted with the import's 5 under its --allow-deletes 5, 13 deletes,
    and the import's own rows were held (exit 7). It pushes the rows its cut run
    wrote as its change; the other change's are judged as theirs (8: under the
    guard)."""
    from idprov.provisioning import outbound
    from idprov.provisioning.outbound import Outbound

    seed(30)
    path = tmp_path / "five.csv"
    path.write_text("username,roles\n" + "".join(f"{name},\n" for name in LEAVERS[:5]))
    original = Outbound.drain

    def cut(self, rows, *args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C once the batch committed, before it was sent

    owners = []
    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        svc.allow_deletes = 5
        patch.setattr(Outbound, "drain", cut)
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, ImportOptions(mode="update", batch_size=5)).run()
        owners.append(svc.outbound.owner)
    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        patch.setattr(IdentityService, "push", lambda *a, **k: None)  # cut before its push
        with svc.unit_of_work() as uow:
            for i in range(21, 29):
                uow.delete_user(f"pl{i}")
        owners.append(svc.outbound.owner)
    gone = outbound.holder_gone  # both processes ended: their claims are given back
    monkeypatch.setattr(
        outbound, "holder_gone", lambda h: any(h.startswith(o) for o in owners) or gone(h)
    )
    assert Outbound.drain is original
    assert len(scim.users()) == 30
    run = cli(
        "import", "users", str(path), "--mode", "update", "--batch-size", "5",
        "--allow-deletes", "5",
    )  # fmt: skip
    assert run.exit_code == 0, run
    assert "held" not in run.stdout
    assert len(scim.users()) == 30 - 5 - 8
    assert cli("outbox", "list", "--json").json()["items"] == []
