"""`idprov export users` then `idprov import users --mode upsert` changes nothing: a cell a
spreadsheet would run as a formula is written after a `'` (which the import drops),
and a claim given with spaces around it is stored trimmed, as an import stores it."""

from __future__ import annotations

import csv
from pathlib import Path

VALUES = {
    "title": "=SUM(A1)",
    "department": "+44 20 7946 0000",
    "display_name": "-2 Smith",
    "cost_center": "@home",
    "country": "'quoted",
}


def listed(cli) -> dict[str, dict]:
    items = cli("user", "list", "--limit", "0", "--json").json()["items"]
    return {u["username"]: {"claims": u["claims"], "roles": u["roles"]} for u in items}


def test_export_then_import_changes_nothing_and_no_cell_is_a_formula(cli, tmp_path: Path):
    cli("role", "add", "staff").ok()
    cli("role", "add", "--", "-ops").ok()
    claims = [f"{k}={v}" for k, v in VALUES.items()]
    cli("user", "add", "carol", *[a for c in claims for a in ("-c", c)], "--role=-ops").ok()
    cli("user", "add", "dan", "-c", "title='=already text", "-r", "staff").ok()
    cli("user", "add", "erin", "-c", "title=Plain", "-r", "staff").ok()
    before = listed(cli)
    out = tmp_path / "users.csv"
    cli("export", "users", str(out)).ok()
    with out.open(newline="") as f:
        rows = {r["username"]: r for r in csv.DictReader(f)}
    for claim, value in VALUES.items():
        assert rows["carol"][claim] == "'" + value  # the spreadsheets' text mark
    assert rows["carol"]["roles"] == "'-ops"
    assert rows["dan"]["title"] == "''=already text"
    assert rows["erin"]["title"] == "Plain" and rows["erin"]["roles"] == "staff"
    report = cli("import", "users", str(out), "--mode", "upsert", "--json").json()
    assert (report["updated"], report["created"], report["unchanged"]) == (0, 0, 3)
    assert listed(cli) == before


def test_a_claim_given_with_spaces_is_stored_trimmed_as_an_import_stores_it(cli, tmp_path):
    cli("user", "add", "j3", "-c", "department= Ops ").ok()
    cli("user", "update", "j3", "-c", "title=  Lead").ok()
    claims = cli("user", "show", "j3", "--json").json()["claims"]
    assert (claims["department"], claims["title"]) == ("Ops", "Lead")
    out = tmp_path / "users.csv"
    cli("export", "users", str(out)).ok()
    report = cli("import", "users", str(out), "--mode", "upsert", "--json").json()
    assert (report["updated"], report["unchanged"]) == (0, 1)


def test_an_hr_files_own_quote_stays_and_a_marked_formula_is_text(cli, tmp_path):
    path = tmp_path / "hr.csv"
    path.write_text("username,title,department\nfay,'Tis the season,'=1+1\n")
    cli("import", "users", str(path)).ok()
    claims = cli("user", "show", "fay", "--json").json()["claims"]
    assert claims["title"] == "'Tis the season"  # not before a formula: the value's own
    assert claims["department"] == "=1+1"  # plain text, as any formula-looking cell
