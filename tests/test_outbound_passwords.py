"""Passwords go out only to connectors configured to send them, only from the command
that set them, and are never stored or logged on the way."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.outbound_helpers import FakeScim, idp_yaml, make_service


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeScim:
    monkeypatch.setenv("SCIM_TOKEN", "secret-token")
    return FakeScim("secret-token")


def bodies(fake: FakeScim, sent: list[tuple[str, dict]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.content:
            sent.append((request.method, json.loads(request.content)))
        return fake.handle(request)

    return httpx.MockTransport(handle)


def service(tmp_path, fake, sent, send_password: bool):
    idps = idp_yaml("target", "https://scim.test/v2")
    if send_password:
        idps = idps.replace(
            "      auth: bearer\n", "      auth: bearer\n      send_password: true\n"
        )
    return make_service(tmp_path, idps, ["target"], http_transport=bodies(fake, sent))


def test_sent_on_create_and_on_passwd_when_configured(tmp_path, fake):
    sent: list[tuple[str, dict]] = []
    with service(tmp_path, fake, sent, send_password=True) as svc:
        svc.add_user("alice", {"email": "a@example.com"}, password="first-Pass1")
        svc.set_password("alice", "second-Pass2")
        svc.update_user("alice", {"title": "Dev"})
        raw = (svc.data_dir / "idprov.db").read_bytes()
    posts = [b for m, b in sent if m == "POST"]
    patches = [b for m, b in sent if m == "PATCH"]
    assert posts[0]["password"] == "first-Pass1"
    assert patches[0]["Operations"][-1]["value"] == {"password": "second-Pass2"}
    assert all("password" not in json.dumps(p) for p in patches[1:])
    for secret in (b"first-Pass1", b"second-Pass2"):
        assert secret not in raw


def test_never_sent_unless_configured(tmp_path, fake):
    sent: list[tuple[str, dict]] = []
    with service(tmp_path, fake, sent, send_password=False) as svc:
        svc.add_user("bob", {"email": "b@example.com"}, password="first-Pass1")
        before = len(sent)
        svc.set_password("bob", "second-Pass2")
    assert all("password" not in body for _, body in sent)
    assert len(sent) == before  # nothing changed remotely: nothing sent


def test_a_password_a_failed_push_could_not_send_is_named_then_and_at_the_retry(tmp_path, fake):
    """user add --password-stdin whose create the target refused (Google's 400 Invalid
    Password), then `outbox retry`: the retry made the account with no password (a
    random one, at Google) and said nothing. The failure says the password was not
    sent; the retry names the user whose password to set again, in its report and in
    the audit."""
    from idprov.provisioning.state import AuditQuery

    sent: list[tuple[str, dict]] = []
    with service(tmp_path, fake, sent, send_password=True) as svc:
        fake.fail("POST", 400)
        result = svc.add_user("pwuser", {"email": "p@example.com"}, password="too-Long-1")
        report = result.outbound
        assert not report.ok
        [op] = report.idps["target"].operations
        assert "the password given was not sent" in op.error
        assert "`idprov user passwd pwuser`" in op.error
        [warning] = report.warnings
        assert "password given was not sent to target for pwuser" in warning
        [row] = svc.outbox_rows()
        assert row.password_unsent
        assert "too-Long-1" not in json.dumps(row.to_dict())

        retry = svc.retry_outbox()
        assert retry.ok
        [warning] = retry.warnings
        assert warning.startswith("pushed to target without the password given earlier")
        assert "pwuser" in warning and "`idprov user passwd pwuser`" in warning
        assert retry.to_dict()["passwords_not_sent"] == [
            {"idp": "target", "user": "pwuser", "earlier": True}
        ]
        entries = svc.audit_log(AuditQuery(action="outbound.create", limit=10))
        done = [e for e in entries if e.outcome == "ok"]
        assert "idprov user passwd" in done[0].details["password"]

        assert svc.set_password("pwuser", "right-Pass-2").outbound.warnings == []
        assert svc.update_user("pwuser", {"title": "Dev"}).outbound.warnings == []
    assert [b.get("password") for m, b in sent if m == "POST"] == ["too-Long-1", None]


def test_a_password_whose_retry_carries_a_new_one_is_no_warning(tmp_path, fake):
    sent: list[tuple[str, dict]] = []
    with service(tmp_path, fake, sent, send_password=True) as svc:
        fake.fail("POST", 400)
        assert not svc.add_user("pat", {}, password="first-Pass1").outbound.ok
        result = svc.set_password("pat", "second-Pass2")  # coalesces into the failed row
        assert result.outbound.ok and result.outbound.warnings == []
        assert svc.outbox_rows() == []
    assert [b.get("password") for m, b in sent if m == "POST"] == ["first-Pass1", "second-Pass2"]
