"""The ``manager`` claim names a user; a rename of that user carries the name to its
reports, and a delete removes it from them (as a directory keeps a manager link), from
the command line as from SCIM (tests/test_serve_clients.py)."""

from __future__ import annotations

import sqlite3

from idprov.provisioning.state import AuditQuery


def test_reports_follow_a_rename_and_lose_the_manager_with_a_delete(cli):
    cli("user", "add", "boss").ok()
    cli("user", "add", "ann", "-c", "manager=boss").ok()
    cli("user", "add", "bob", "-c", "manager=BOSS").ok()  # names compare case-insensitively
    cli("user", "add", "cat", "-c", "manager=bossy").ok()
    cli("user", "rename", "boss", "chief").ok()
    claims = {u: cli("user", "show", u, "--json").json()["claims"] for u in ("ann", "bob", "cat")}
    assert [claims[u].get("manager") for u in ("ann", "bob", "cat")] == ["chief", "chief", "bossy"]

    cli("user", "delete", "chief", "--yes").ok()
    cli("user", "add", "chief").ok()  # a newcomer of the same name manages nobody
    claims = {u: cli("user", "show", u, "--json").json()["claims"] for u in ("ann", "bob", "cat")}
    assert [claims[u].get("manager") for u in ("ann", "bob", "cat")] == [None, None, "bossy"]


def test_each_report_is_a_change_of_its_own_in_the_audit_log(cli):
    from idprov import open_service

    cli("user", "add", "boss").ok()
    cli("user", "add", "ann", "-c", "manager=boss").ok()
    cli("user", "delete", "boss", "--yes").ok()
    with open_service() as service:
        [entry] = service.audit_log(AuditQuery(action="user.update"))
    assert entry.target == "ann" and entry.details == {"claims": ["manager"]}


def test_the_reports_are_found_by_an_index_not_a_scan(cli, data_dir):
    """The condition a rename or delete asks the store (a scan of 100,000 users'
    claims took 0.1 s each time)."""
    from idprov import open_service
    from idprov.model import Condition

    cli("user", "add", "boss").ok()
    with open_service() as service:
        store = service.store("PRIMARY")
        sql, params = store._condition_sql().sql(Condition("eq", "claim:manager", "boss"))
    db = sqlite3.connect(data_dir / "idprov.db")
    plan = " ".join(
        r[-1] for r in db.execute(f"EXPLAIN QUERY PLAN SELECT id FROM users WHERE {sql}", params)
    )
    assert "USING INDEX users_claim_manager" in plan, plan
