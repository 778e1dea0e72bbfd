"""`idprov import users FILE --missing disable|delete --domain DOMAIN`: leavers from a
complete HR feed, disabled or deleted here and at a real SCIM target (scim2-server),
judged by the deletion guard before anything is written, and a killed run re-run to
the same state."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from idprov.config import load_config
from idprov.inbound.csv_import import CsvImport, ImportOptions
from idprov.provisioning.service import IdentityService
from tests.peers.scim2 import Scim2Peer

HEADER = "username,email\n"


def write_config(tmp_path: Path, base_url: str, extra_store: str = "", roles: str = "null") -> None:
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: HR
    path: {tmp_path / "hr.db"}
{extra_store}
identity_providers:
  - name: scim
    connector: scim2
    options: {{base_url: "{base_url}", auth: bearer, token: env:SCIM_TOKEN}}
    provisioning_roles: {roles}
    retry: {{max_attempts: 2, initial_backoff: 0.01, max_backoff: 0.05}}
applications:
  - name: resident
    identity_providers: [scim]
""")


@pytest.fixture()
def scim(tmp_path: Path, scim2_server: Scim2Peer, monkeypatch: pytest.MonkeyPatch) -> Scim2Peer:
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server.base_url)
    return scim2_server


def feed(tmp_path: Path, names: list[str], name: str = "hr.csv", extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(f"{n},{n}@example.com\n" for n in names) + extra)
    return path


def nightly(cli, path: Path, *more: str):
    return cli("import", "users", str(path), "--mode", "upsert", "--domain", "HR", *more)


def local(cli) -> dict[str, dict[str, Any]]:
    """Every user here, by qualified name, with its claims."""
    items = cli("user", "list", "--limit", "0", "--json").json()["items"]
    return {
        (f"{u['domain']}/" if u["domain"] != "PRIMARY" else "") + u["username"]: u for u in items
    }


def active_here(cli) -> dict[str, bool]:
    return {name: u["claims"].get("active") != "false" for name, u in local(cli).items()}


def at_target(scim: Scim2Peer) -> dict[str, bool]:
    return {u["userName"]: u.get("active", True) for u in scim.users()}


def snapshot(tmp_path: Path) -> list[tuple[Any, ...]]:
    """Every row of the userstores, the audit log, the outbox and the ledger."""
    out: list[tuple[Any, ...]] = []
    for db, tables in (
        (tmp_path / "data" / "idprov.db", ("users", "user_roles", "audit", "outbox", "ledger")),
        (tmp_path / "hr.db", ("users", "user_roles")),
    ):
        conn = sqlite3.connect(db)
        try:
            there = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            out += [
                (db.name, t, *row)
                for t in tables
                if t in there
                for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            ]
        finally:
            conn.close()
    return out


def test_a_leaver_is_disabled_here_and_at_the_target_and_a_joiner_made(cli, scim, tmp_path):
    cli("user", "add", "admin", "-c", "email=admin@example.com").ok()  # PRIMARY: never missing
    nightly(cli, feed(tmp_path, ["alice", "bob", "carol"]), "--missing", "disable").ok()
    assert at_target(scim) == {"admin": True, "alice": True, "bob": True, "carol": True}
    report = nightly(
        cli, feed(tmp_path, ["alice", "bob", "dave"]), "--missing", "disable", "--json"
    ).json()
    assert report["created"] == 1
    missing = report["missing"]
    assert (missing["count"], missing["of"], missing["done"]) == (1, 3, 1)
    assert missing["users"] == ["HR/carol"]
    assert active_here(cli) == {
        "admin": True,
        "HR/alice": True,
        "HR/bob": True,
        "HR/carol": False,
        "HR/dave": True,
    }
    assert at_target(scim) == {
        "admin": True,
        "alice": True,
        "bob": True,
        "carol": False,
        "dave": True,
    }
    [scim_report] = report["outbound"]["idps"]  # dave's create, carol's disable: one push
    assert {(op["operation"], op["label"]) for op in scim_report["operations"]} >= {
        ("create", "HR/dave"),
        ("disable", "HR/carol"),
    }
    audit = cli("log", "--action", "user.import.missing", "--json").items()
    assert [e["details"]["users"] for e in audit] == [["HR/carol"]]
    imports = cli("log", "--action", "user.import", "--json").items()
    assert {(e["actor"], e["application"]) for e in imports} == {(audit[0]["actor"], "resident")}
    # the same file again: carol is already disabled, not counted, nothing changes
    again = nightly(cli, tmp_path / "hr.csv", "--missing", "disable", "--json").json()
    assert (again["missing"]["count"], again["unchanged"]) == (0, 3)


def test_with_delete_a_leaver_is_deleted_here_and_at_the_target(cli, scim, tmp_path):
    nightly(cli, feed(tmp_path, ["alice", "bob", "carol"]), "--missing", "delete").ok()
    run = nightly(cli, feed(tmp_path, ["alice", "carol"]), "--missing", "delete").ok()
    assert "users not in the file: 1 of 3 in HR, deleted: HR/bob" in run.stdout
    assert set(local(cli)) == {"HR/alice", "HR/carol"}
    assert set(at_target(scim)) == {"alice", "carol"}


def test_a_user_whose_row_is_rejected_is_not_missing(cli, scim, tmp_path):
    nightly(cli, feed(tmp_path, ["alice", "bob", "carol"]), "--missing", "disable").ok()
    typo = feed(tmp_path, ["alice"], "typo.csv", extra="carol,not-an-email\n")
    report = nightly(cli, typo, "--missing", "disable", "--json")
    assert report.exit_code == 9  # carol's row rejected, the rest done
    assert [e["line"] for e in json.loads(report.stdout)["errors"]] == [3]
    assert active_here(cli) == {"HR/alice": True, "HR/bob": False, "HR/carol": True}
    assert at_target(scim) == {"alice": True, "bob": False, "carol": True}


def test_a_row_whose_user_cannot_be_read_leaves_every_leaver_alone(cli, scim, tmp_path):
    nightly(cli, feed(tmp_path, ["alice", "bob", "carol"]), "--missing", "disable").ok()
    broken = feed(tmp_path, ["alice"], "broken.csv", extra="carol,c@example.com,extra\n")
    run = nightly(cli, broken, "--missing", "disable", "--json")
    assert run.exit_code == 9
    assert (
        "nobody was disabled" in run.stdout
        and "1 rejected row (line 3) names no user" in run.stdout
    )
    assert all(active_here(cli).values()) and all(at_target(scim).values())


def test_with_on_error_stop_a_bad_row_disables_nobody(cli, scim, tmp_path):
    nightly(cli, feed(tmp_path, ["alice", "bob"]), "--missing", "disable").ok()
    before = snapshot(tmp_path)
    bad = feed(tmp_path, ["alice"], "bad.csv", extra="carl,nope\n")
    run = nightly(cli, bad, "--missing", "disable", "--on-error", "stop")
    assert run.exit_code == 10
    assert snapshot(tmp_path) == before


def test_the_guard_refuses_a_truncated_feed_whole_and_allow_deletes_accepts_it(cli, scim, tmp_path):
    everyone = [f"emp{i:02d}" for i in range(30)]
    nightly(cli, feed(tmp_path, everyone), "--missing", "disable").ok()
    before = snapshot(tmp_path)
    truncated = feed(tmp_path, ["emp00", "emp01", "newbie"], "truncated.csv")
    error = nightly(cli, truncated, "--missing", "disable", "--json").error(7)
    assert "would disable 28 of the 30 active users of the HR userstore (93%)" in error["message"]
    assert "not in truncated.csv" in error["message"]
    assert "max_percent (20%) of scim" in error["message"]
    assert "nothing was changed" in error["message"]
    assert "--allow-deletes 28" in error["hint"]
    assert snapshot(tmp_path) == before  # not even the joiner
    assert all(at_target(scim).values()) and "newbie" not in at_target(scim)
    nightly(cli, truncated, "--missing", "disable", "--allow-deletes", "27").fails(7)
    assert snapshot(tmp_path) == before
    nightly(cli, truncated, "--missing", "disable", "--allow-deletes", "28").ok()
    target = at_target(scim)
    assert sum(target.values()) == 3 and target["newbie"] and target["emp01"]
    assert sum(active_here(cli).values()) == 3


def test_the_guard_judges_the_effects_at_the_target_too(cli, scim2_server, tmp_path, monkeypatch):
    """12 leavers of 100 users is under the domain's 20%, but they are every account
    the target holds (it is scoped by a role): refused, as `user delete` would be."""
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    write_config(tmp_path, scim2_server.base_url, roles="[eng]")
    cli("role", "add", "HR/eng").ok()
    staff = [f"s{i:03d}" for i in range(88)]
    eng = [f"e{i:02d}" for i in range(12)]
    everyone = tmp_path / "all.csv"
    everyone.write_text(
        "username,email,roles\n"
        + "".join(f"{n},{n}@example.com,\n" for n in staff)
        + "".join(f"{n},{n}@example.com,eng\n" for n in eng)
    )
    nightly(cli, everyone, "--missing", "disable").ok()
    assert len(scim2_server.users()) == 12
    error = nightly(cli, feed(tmp_path, staff), "--missing", "disable", "--json").error(7)
    assert "12 of the 100 active users" in error["message"]
    assert "will disable 12 users at scim (100% of its 12 users)" in error["message"]
    assert "--allow-deletes 12" in error["hint"]
    assert all(at_target(scim2_server).values())


def test_a_dry_run_lists_the_leavers_and_changes_nothing(cli, scim, tmp_path):
    nightly(cli, feed(tmp_path, ["alice", "bob", "carol", "dan"]), "--missing", "delete").ok()
    before = snapshot(tmp_path)
    smaller = feed(tmp_path, ["alice", "erin"], "smaller.csv")
    report = nightly(cli, smaller, "--missing", "delete", "--dry-run", "--json").json()
    missing = report["missing"]
    assert (missing["count"], missing["of"], missing["done"]) == (3, 4, 0)
    assert missing["users"] == ["HR/bob", "HR/carol", "HR/dan"]
    assert report["created"] == 1
    shown = nightly(cli, smaller, "--missing", "delete", "--dry-run").ok().stdout
    assert "users not in the file: 3 of 4 in HR, would be deleted: HR/bob, HR/carol, HR/dan" in (
        shown
    )
    assert snapshot(tmp_path) == before
    assert set(at_target(scim)) == {"alice", "bob", "carol", "dan"}


def test_a_dry_run_over_the_guard_says_so_and_exits_7(cli, scim, tmp_path):
    nightly(cli, feed(tmp_path, [f"u{i:02d}" for i in range(20)]), "--missing", "delete").ok()
    before = snapshot(tmp_path)
    run = nightly(cli, feed(tmp_path, ["u00"], "one.csv"), "--missing", "delete", "--dry-run")
    assert run.exit_code == 7
    assert "would delete 19 of the 20 users of the HR userstore" in run.stdout
    assert snapshot(tmp_path) == before


def test_users_of_other_domains_are_untouched_and_rows_of_them_rejected(cli, scim, tmp_path):
    cli("user", "add", "root", "-c", "email=root@example.com").ok()
    nightly(cli, feed(tmp_path, ["alice", "bob"]), "--missing", "disable").ok()
    mixed = feed(tmp_path, ["alice", "bob"], "mixed.csv", extra="PRIMARY/eve,eve@example.com\n")
    run = nightly(cli, mixed, "--missing", "disable", "--json")
    assert run.exit_code == 9
    assert "PRIMARY/eve is not a user of HR" in run.stdout
    assert active_here(cli) == {"root": True, "HR/alice": True, "HR/bob": True}
    assert "eve" not in at_target(scim)


def test_missing_needs_an_explicit_domain_and_a_mode_that_reads_users(cli, scim, tmp_path):
    path = feed(tmp_path, ["alice"])
    for args in (
        ("--mode", "upsert", "--missing", "disable"),
        ("--mode", "update", "--missing", "delete"),
    ):
        error = cli("import", "users", str(path), *args, "--json").error(2)
        assert "needs --domain DOMAIN" in error["message"]
        assert "--domain HR" in error["hint"]
    error = cli("import", "users", str(path), "-d", "HR", "--missing", "disable", "--json").error(2)
    assert "needs --mode upsert or --mode update" in error["message"]
    cli("import", "users", str(path), "-d", "PRIMARY", "--mode", "upsert", "--missing", "disable")
    assert active_here(cli) == {"alice": True}  # PRIMARY, when said, is the feed's domain


def test_a_read_only_userstore_is_refused_before_the_file_is_read(
    cli, scim2_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("SCIM_TOKEN", scim2_server.token)
    archive = f"  - domain: ARCHIVE\n    path: {tmp_path / 'a.db'}"
    write_config(tmp_path, scim2_server.base_url, extra_store=archive)
    cli("user", "add", "ARCHIVE/old", "-c", "email=old@example.com").ok()
    write_config(tmp_path, scim2_server.base_url, extra_store=archive + "\n    read_only: true")
    path = feed(tmp_path, ["alice"])
    args = ("--mode", "upsert", "-d", "ARCHIVE", "--missing", "disable", "--json")
    error = cli("import", "users", str(path), *args).error(5)
    assert "the ARCHIVE userstore is read-only" in error["message"]
    assert "read_only: false" in error["hint"]


def test_a_user_in_the_file_disabled_by_an_administrator_stays_disabled_and_is_noted(
    cli, scim, tmp_path
):
    path = feed(tmp_path, ["alice", "bob"])
    nightly(cli, path, "--missing", "disable").ok()
    cli("user", "update", "HR/bob", "-c", "active=false").ok()
    report = nightly(cli, path, "--missing", "disable", "--json").json()
    assert report["missing"]["count"] == 0
    [note] = [n for n in report["notes"] if "disabled" in n]
    assert note.startswith("1 user in the file is disabled (HR/bob)")
    assert "`active` column" in note and "idprov user update NAME -c active=true" in note
    assert active_here(cli) == {"HR/alice": True, "HR/bob": False}


def test_a_killed_import_re_run_ends_in_the_same_state(cli, scim, tmp_path, monkeypatch):
    """Killed after its rows were written, before the leavers; then killed after the
    first batch of leavers: each re-run of the same command finishes the work."""
    nightly(cli, feed(tmp_path, ["alice", "bob", "carol", "dan"]), "--missing", "disable").ok()
    path = feed(tmp_path, ["alice", "erin"], "next.csv")
    options = ImportOptions(mode="upsert", domain="HR", missing="disable", batch_size=1)

    def killed() -> None:
        raise KeyboardInterrupt  # the process is killed

    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        svc.allow_deletes = 3
        patch.setattr(CsvImport, "_write_missing", lambda self: killed())
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, options).run()
    assert active_here(cli) == {
        "HR/alice": True,
        "HR/bob": True,
        "HR/carol": True,
        "HR/dan": True,
        "HR/erin": True,
    }
    original, batches = CsvImport._leavers_batch, []

    def dies_at_the_second(self, store, batch):
        if batches:
            raise KeyboardInterrupt
        batches.append(batch)
        original(self, store, batch)

    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        svc.allow_deletes = 3
        patch.setattr(CsvImport, "_leavers_batch", dies_at_the_second)
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, options).run()
    assert sum(not v for v in active_here(cli).values()) == 1
    report = nightly(cli, path, "--missing", "disable", "--allow-deletes", "3", "--json").json()
    assert report["missing"]["count"] == 2  # the one disabled already is not counted
    expected = {"alice": True, "bob": False, "carol": False, "dan": False, "erin": True}
    assert active_here(cli) == {f"HR/{k}": v for k, v in expected.items()}
    assert at_target(scim) == expected
    assert cli("outbox", "list", "--json").json()["items"] == []


def test_without_identity_providers_the_guard_judges_the_domains_count(cli, tmp_path):
    """No target holds the users, yet deleting 15 of 20 is a mass change here: judged
    by the default thresholds against the domain's users."""
    (tmp_path / "idprov.yaml").write_text(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\nuserstores:\n  - domain: PRIMARY\n"
        f"  - domain: HR\n    path: {tmp_path / 'hr.db'}\n"
    )
    nightly(cli, feed(tmp_path, [f"p{i:02d}" for i in range(20)]), "--missing", "delete").ok()
    short = feed(tmp_path, [f"p{i:02d}" for i in range(5)], "short.csv")
    error = nightly(cli, short, "--missing", "delete", "--json").error(7)
    assert "would delete 15 of the 20 users of the HR userstore (75%)" in error["message"]
    assert "max_percent (20%) by default" in error["message"]
    assert len(local(cli)) == 20
    nightly(cli, short, "--missing", "delete", "--allow-deletes", "15").ok()
    assert set(local(cli)) == {f"HR/p{i:02d}" for i in range(5)}


def test_no_push_leaves_the_leavers_to_sync(cli, scim, tmp_path):
    nightly(cli, feed(tmp_path, ["alice", "bob"]), "--missing", "disable").ok()
    nightly(cli, feed(tmp_path, ["alice"]), "--missing", "disable", "--no-push").ok()
    assert active_here(cli) == {"HR/alice": True, "HR/bob": False}
    assert at_target(scim) == {"alice": True, "bob": True}
    [row] = cli("outbox", "list", "--json").items()
    assert row["label"] == "HR/bob"
    cli("sync").ok()
    assert at_target(scim) == {"alice": True, "bob": False}


def test_a_directory_that_maps_no_active_claim_cannot_disable_but_can_delete(cli, slapd, tmp_path):
    """Such a store holds active users only: disabling its leavers is refused before
    the file is read; deleting them works."""
    secret = tmp_path / "ldap-password"
    secret.write_text(slapd.root_password)
    secret.chmod(0o600)
    (tmp_path / "idprov.yaml").write_text(f"""
version: 1
data_dir: {tmp_path / "data"}
userstores:
  - domain: PRIMARY
  - domain: CORP
    type: ldap
    url: {slapd.url}
    bind_dn: {slapd.root_dn}
    bind_password: file:{secret}
    user_search_base: {slapd.people}
    group_search_base: {slapd.groups}
""")
    upsert = ("--mode", "upsert", "--domain", "CORP")
    cli("import", "users", str(feed(tmp_path, ["ann", "ben"])), *upsert).ok()
    alone = feed(tmp_path, ["ann"], "alone.csv")
    error = cli("import", "users", str(alone), *upsert, "--missing", "disable", "--json").error(2)
    assert "the CORP userstore maps no `active` claim" in error["message"]
    assert "--missing delete" in error["hint"]
    cli("import", "users", str(alone), *upsert, "--missing", "delete").ok()
    assert set(local(cli)) == {"CORP/ann"}


def test_missing_disable_judges_against_enabled_users_not_past_leavers(cli, tmp_path):
    """Past leavers stay in the domain, disabled: 11 of the 12 employees missing from a
    truncated export is 92% of them, not 11 of 60 users (18%, under the guard)."""
    (tmp_path / "idprov.yaml").write_text(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\nuserstores:\n  - domain: PRIMARY\n"
        f"  - domain: HR\n    path: {tmp_path / 'hr.db'}\n"
    )
    full = tmp_path / "full.csv"
    full.write_text(
        "username,email,active\n"
        + "".join(f"p{i:02d},p{i:02d}@example.com,{str(i >= 48).lower()}\n" for i in range(60))
    )
    nightly(cli, full).ok()
    assert sum(active_here(cli).values()) == 12
    short = feed(tmp_path, ["p48"], "short.csv")
    error = nightly(cli, short, "--missing", "disable", "--json").error(7)
    assert "would disable 11 of the 12 active users of the HR userstore (92%)" in error["message"]
    assert "--allow-deletes 11" in error["hint"]
    assert sum(active_here(cli).values()) == 12
    report = nightly(cli, short, "--missing", "disable", "--allow-deletes", "11", "--json").json()
    assert (report["missing"]["count"], report["missing"]["of"]) == (11, 12)
    assert active_here(cli) == {f"HR/p{i:02d}": i == 48 for i in range(60)}


def test_the_leavers_are_judged_with_what_the_files_own_rows_deprovision(cli, scim, tmp_path):
    """6 leavers (20% of 30, under the guard) and 6 rows saying active=false (under it
    too, alone): 12 disables together, 40% of the target's users. The rows' push was
    judged apart from the leavers, and disabled its 6 at the target before the leavers
    tripped the guard."""
    everyone = [f"emp{i:02d}" for i in range(30)]
    nightly(cli, feed(tmp_path, everyone), "--missing", "disable").ok()
    short = tmp_path / "short.csv"  # emp24..emp29 left; emp00..emp05 say active=false
    short.write_text(
        "username,email,active\n"
        + "".join(f"emp{i:02d},emp{i:02d}@example.com,{str(i >= 6).lower()}\n" for i in range(24))
    )
    run = nightly(cli, short, "--missing", "disable", "--json")
    assert run.exit_code == 7, run
    assert all(at_target(scim).values())  # nothing was disabled at the target
    held = cli("outbox", "list", "--status", "held", "--json").items()
    leaving = {f"HR/emp{i:02d}" for i in [*range(6), *range(24, 30)]}
    assert leaving <= {r["label"] for r in held}  # with the rows pushed beside them
    assert all("will disable 12 users at scim (40%" in r["last_error"] for r in held), held
    cli("outbox", "release", "--yes", "--allow-deletes", "12").ok()
    assert sum(at_target(scim).values()) == 18


def test_the_leavers_counted_before_their_push_are_not_counted_twice(cli, scim, tmp_path):
    """--allow-deletes 12 accepts the 6 leavers and the 6 rows' disables together: the
    leavers' push, judged with them counted in already, counts them once (18 > 12)."""
    everyone = [f"emp{i:02d}" for i in range(30)]
    nightly(cli, feed(tmp_path, everyone), "--missing", "disable").ok()
    short = tmp_path / "short.csv"
    short.write_text(
        "username,email,active\n"
        + "".join(f"emp{i:02d},emp{i:02d}@example.com,{str(i >= 6).lower()}\n" for i in range(24))
    )
    nightly(cli, short, "--missing", "disable", "--allow-deletes", "12").ok()
    assert sum(at_target(scim).values()) == 18
    assert cli("outbox", "list", "--json").items() == []


def _gone(monkeypatch: pytest.MonkeyPatch, cut: IdentityService) -> None:
    """The cut run's process is gone (Ctrl-C ended it): its claims are given back."""
    from idprov.provisioning import outbound

    owner, before = cut.outbound.owner, outbound.holder_gone
    monkeypatch.setattr(outbound, "holder_gone", lambda h: h.startswith(owner) or before(h))


def test_a_run_cut_while_pushing_leavers_is_finished_by_its_rerun(cli, scim, tmp_path, monkeypatch):
    """Ctrl-C while a batch of leavers was being pushed (disabled here, committed, not
    sent): the re-run the hint asks for disabled the rest and exited 0, while the cut
    batch's users stayed active at the target, their rows pending in the outbox until
    a separate `idprov outbox retry`. The re-run pushes what its cut run wrote."""
    from idprov.provisioning.outbound import Outbound

    names = [f"m{i:02d}" for i in range(20)]
    nightly(cli, feed(tmp_path, names)).ok()
    path = feed(tmp_path, names[:10], "next.csv")
    options = ImportOptions(mode="upsert", domain="HR", missing="disable", batch_size=5)
    original, drains = Outbound.drain, []

    def cut_in_the_second(self, rows, *args, **kwargs):
        drains.append(len(rows))
        if len(drains) == 2:
            raise KeyboardInterrupt  # Ctrl-C once the second batch of leavers committed
        return original(self, rows, *args, **kwargs)

    with IdentityService(load_config()) as svc, monkeypatch.context() as patch:
        svc.allow_deletes = 10
        patch.setattr(Outbound, "drain", cut_in_the_second)
        with pytest.raises(KeyboardInterrupt):
            CsvImport(svc, path, options).run()
        _gone(monkeypatch, svc)
    assert sum(not v for v in active_here(cli).values()) == 10  # all disabled here
    assert sum(not v for v in at_target(scim).values()) == 5  # the cut batch not sent
    run = nightly(cli, path, "--missing", "disable", "--allow-deletes", "10")
    assert run.exit_code == 0, run
    assert at_target(scim) == {n: n in names[:10] for n in names}
    assert cli("outbox", "list", "--json").json()["items"] == []
    assert "scim: 5 done" in run.stdout
