"""`idprov import users --quiet` from cron: nothing on stderr when all went well."""

from __future__ import annotations

from pathlib import Path


def test_a_quiet_import_writes_nothing_to_stderr(cli, tmp_path: Path):
    cli("role", "add", "staff").ok()
    path = tmp_path / "users.csv"
    path.write_text("username,email,roles\nalice,alice@example.com,staff\n")
    run = cli("import", "users", str(path), "--quiet")
    assert run.exit_code == 0, run
    assert run.stderr == ""
    assert "created" in run.stdout  # the summary stays
    loud = cli("import", "users", str(path), "--mode", "upsert")
    assert loud.exit_code == 0, loud
    assert loud.stderr.splitlines()[0] == "import"  # without --quiet, the title as before
