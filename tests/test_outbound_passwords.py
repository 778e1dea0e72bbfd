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
