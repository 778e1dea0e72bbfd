"""A secret that cannot be resolved (``env:SCIM_TOKEN`` unset) is treated as refused
credentials: nothing was sent, so a create leaves no ``creating`` mark; `explain`
says "never provisioned there", and the next try creates without looking first."""

from __future__ import annotations

from pathlib import Path

from tests.outbound_helpers import FakeScim, idp_yaml, make_config_text, make_service

BASE = "https://scim.test/v2"


def service(tmp_path: Path, fake: FakeScim):
    return make_service(
        tmp_path, idp_yaml("target", BASE), ["target"], http_transport=fake.transport()
    )


def test_a_create_never_sent_for_a_missing_secret_leaves_no_mark(tmp_path, monkeypatch):
    from idprov.provisioning.explain import explain

    fake = FakeScim("secret-token")
    monkeypatch.delenv("SCIM_TOKEN", raising=False)
    with service(tmp_path, fake) as svc:
        result = svc.add_user("alice", {"email": "alice@example.com"})
        assert result.outbound is not None and not result.outbound.ok
        assert fake.requests == []
        assert svc.state.ledger.get("target", "user", result.entity.id) is None
        assert explain(svc, "alice", "target")["ledger"] is None  # "never provisioned there"
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    with service(tmp_path, fake) as svc:
        assert svc.retry_outbox().ok
    assert fake.requests == [("POST", "/v2/Users")]  # no lookup first
    assert len(fake.users) == 1


def test_explain_on_the_cli_says_never_provisioned_there(cli, tmp_path, monkeypatch):
    """As the trial ran it: SCIM_TOKEN unset, `user add`, `explain`."""
    monkeypatch.delenv("SCIM_TOKEN", raising=False)
    (tmp_path / "idprov.yaml").write_text(
        make_config_text(tmp_path, idp_yaml("scim", BASE), ["scim"])
    )
    added = cli("user", "add", "g1", "-c", "email=g1@example.com")
    assert added.exit_code == 6, added
    assert "SCIM_TOKEN" in added.stdout + added.stderr
    shown = cli("explain", "g1", "--idp", "scim").ok().stdout
    assert "ledger: never provisioned there" in shown and "a create" not in shown
