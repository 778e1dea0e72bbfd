"""An import whose directory stops answering part-way (a relay in front of the real
slapd drops every connection at the first add) says that running it again resumes
after the last row written, as a Ctrl-C does; and it does."""

from __future__ import annotations

import json

from tests.test_userstore_ldap_interrupted import ADD, MODIFY, corp, cutoff  # noqa: F401


def test_an_import_cut_off_by_the_directory_says_a_rerun_resumes(
    cli,
    corp,  # noqa: F811 - the fixture imported above
    cutoff,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    cli("role", "add", "CORP/staff").ok()
    rows = "".join(f"CORP/n{i},n{i}@example.com,staff\n" for i in range(3))
    (tmp_path / "new.csv").write_text("username,email,roles\n" + rows)
    cutoff.at(MODIFY, after=ADD)  # the first batch goes through; the second's groups not
    cut = cli("import", "users", "new.csv", "--batch-size", "1", "--json")
    error = cut.error(1)
    assert "run the same import again: it resumes after the last row written" in error["hint"]
    cutoff.restore()
    result = cli("import", "users", "new.csv", "--batch-size", "1", "--json")
    assert result.exit_code == 0, result
    users = cli("user", "list", "--domain", "CORP", "--json").json()["items"]
    assert sorted(u["username"] for u in users) == ["n0", "n1", "n2"]
    assert json.loads(result.stdout)["rejected"] == 0
