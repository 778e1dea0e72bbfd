"""A JIT login's claims are trimmed as the CLI's ``--claim`` values and an import's
cells are: an IdP's ``"alice@example.com "`` refused the login (the e-mail pattern),
where the CLI takes it as ``alice@example.com``, and a value kept with its spaces
made the next login with it written cleanly (or the CLI's) an update, sent to every
target. The username was already trimmed (``" alice "``
logs in as ``alice``: one user, never two); a value that is only spaces is no value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.test_jit import ALICE, claims_file, login, portal  # noqa: F401


def test_a_login_with_spaces_around_its_values_is_the_clean_login(
    cli: Any,
    portal: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    spaced = {
        **ALICE,
        "sub": " alice ",
        "email": "alice@example.com ",
        "given_name": "\tAlice ",
        "name": "   ",
        "groups": ["Engineering", "Everyone"],
    }
    first = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, spaced)).json()
    assert first["action"] == "created"
    assert first["user"]["username"] == "alice"
    assert first["user"]["claims"] == {"email": "alice@example.com", "given_name": "Alice"}
    clean = {**spaced, "sub": "alice", "email": "alice@example.com", "given_name": "Alice"}
    again = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, clean)).json()
    assert again["action"] == "unchanged", again
    listed = cli("--config", str(portal), "user", "list", "--json").json()
    assert [u["username"] for u in listed["items"]] == ["alice"]
    cli("--config", str(portal), "user", "update", "alice", "--claim", "given_name= Alice ").ok()
    third = login(cli, portal, "--idp", "proxy", "--claims", claims_file(tmp_path, spaced)).json()
    assert third["action"] == "unchanged", third
