"""A provisioning role no userstore has (a typo: ``stafff``) refuses its IdP's plan:
`sync` and `plan` send nothing there (exit 2, naming the IdP, the role, the line and
the fix) and go on at the other IdPs; under it every account would be deleted."""

from __future__ import annotations

import json
from pathlib import Path

from idprov.config.models import IdentityProviderConfig
from idprov.model import Role
from tests import test_sync_guard_per_idp as per_idp

bee, two = per_idp.bee, per_idp.two
"""Two IdPs: scim-a (staff, a tight deletion guard) and scim-bee (eng)."""


def typo(tmp_path: Path) -> None:
    path = tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace("[staff]", "[stafff]"))


def populated(cli) -> None:
    cli("role", "add", "staff").ok()
    cli("role", "add", "eng").ok()
    for i in range(3):
        cli("user", "add", f"user{i}", "-c", f"email=user{i}@example.com", "-r", "staff").ok()
    cli("user", "add", "b1", "-c", "email=b1@example.com", "-r", "eng").ok()


def test_a_typo_in_provisioning_roles_deletes_nothing_and_the_others_sync(cli, two, bee, tmp_path):
    populated(cli)
    assert len(two.users()) == 3
    typo(tmp_path)
    cli("user", "add", "b2", "-c", "email=b2@example.com", "-r", "eng").ok()
    run = cli("sync", "--json")
    assert run.exit_code == 2, run
    error = json.loads(run.stderr)["error"]
    assert "no userstore has a role 'stafff' (did you mean 'staff'?)" in error["message"]
    assert "identity provider scim-a is not synced" in error["message"]
    assert "idprov.yaml:" in error["message"]
    assert "identity_providers[0].provisioning_roles" in error["hint"]
    assert "`idprov role add stafff`" in error["hint"]
    assert [r["code"] for r in json.loads(run.stdout)["refused"]] == ["config"]
    assert len(two.users()) == 3  # nothing deleted at scim-a
    assert {u["userName"] for u in bee.users()} == {"b1", "b2"}  # scim-bee synced
    assert cli("outbox", "list", "--idp", "scim-a", "--json").items() == []


def test_plan_refuses_the_idp_too(cli, two, bee, tmp_path):
    populated(cli)
    typo(tmp_path)
    run = cli("plan")
    assert run.exit_code == 2, run
    assert "no userstore has a role 'stafff'" in run.stderr
    assert "delete" not in run.stdout
    (tmp_path / "idprov.yaml").write_text(
        (tmp_path / "idprov.yaml").read_text().replace("[stafff]", "[STAFF]")
    )
    assert cli("sync").exit_code == 0  # case-insensitive: STAFF is staff


def role(domain: str, name: str) -> Role:
    return Role(f"{domain}-{name}", domain, name)


def scoped(*roles: str) -> IdentityProviderConfig:
    return IdentityProviderConfig(name="x", connector="scim2", provisioning_roles=list(roles))


def test_qualified_internal_and_case_insensitive_names_are_known():
    from idprov.provisioning.scope_roles import known_roles, unknown_roles

    known = known_roles([role("PRIMARY", "staff"), role("HR", "Payroll"), role("Internal", "aud")])
    assert unknown_roles(scoped("STAFF", "hr/payroll", "payroll", "Internal/AUD"), known) == []
    assert unknown_roles(scoped("HR/staff", "aud", "Internal/staff"), known) == [
        "HR/staff",
        "aud",
        "Internal/staff",
    ]
    assert unknown_roles(IdentityProviderConfig(name="x", connector="scim2"), known) == []


def test_config_validate_names_the_unknown_role_and_strict_refuses(cli, two, bee, tmp_path):
    populated(cli)
    typo(tmp_path)
    run = cli("config", "validate")
    assert run.exit_code == 0, run
    assert "no userstore has a role 'stafff' (did you mean 'staff'?)" in run.stdout
    assert "refuse identity provider scim-a" in run.stdout
    assert "`idprov role add stafff`" in run.stdout
    found = json.loads(cli("config", "validate", "--json").stdout)["unknown_scope_roles"]
    assert len(found) == 1 and "identity_providers[0].provisioning_roles[0]" in found[0]
    strict = cli("config", "validate", "--strict", "--json")
    assert strict.exit_code == 2, strict
    assert "idprov.yaml:" in json.loads(strict.stderr)["error"]["message"]
    path = tmp_path / "idprov.yaml"
    path.write_text(path.read_text().replace("[stafff]", "[Internal/auditors]"))
    assert "Internal/auditors" in cli("config", "validate").stdout
    cli("role", "add", "Internal/auditors").ok()
    assert cli("config", "validate", "--strict").exit_code == 0


def test_outbox_release_does_not_send_the_held_deletions_of_a_mistyped_scope(
    cli, two, bee, tmp_path
):
    """Under the typo, a user's change holds its deprovision (a change of scope, which
    only a sync judges): `outbox release`, even with an allowance, holds it again and
    deletes nothing (sync refuses the typo)."""
    populated(cli)
    typo(tmp_path)
    held = cli("user", "update", "user0", "-c", "title=Boss")
    assert held.exit_code == 7, held  # the deprovision the typo implies: held
    run = cli("outbox", "release", "--idp", "scim-a", "--yes", "--allow-deletes", "10")
    assert run.exit_code == 7, run
    assert "those a change of scope holds: `idprov sync --idp scim-a`" in run.stdout
    assert len(two.users()) == 3  # nothing deleted at scim-a
    assert {r["status"] for r in cli("outbox", "list", "--idp", "scim-a", "--json").items()} == {
        "held"
    }
