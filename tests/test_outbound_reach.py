"""What a failure to reach or to sign in to a target says: the host at fault (a dead
proxy, named without its credentials), a certificate that fails verification (not
retried: it is not temporary; the fix is options.ca_file, verification stays on), and
refused credentials named by their secret reference, never by their value."""

from __future__ import annotations

import socket

import pytest

from tests.outbound_helpers import FakeScim, make_service
from tests.test_outbound_tls_auth import https_server, tls_idp

__all__ = ["https_server"]  # the fixture, used here


def only_op(result):
    [op] = result.outbound.idps["secure"].operations
    return op


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_certificate_that_fails_verification_is_not_retried_and_names_ca_file(
    tmp_path, https_server, monkeypatch
):
    url, _ca = https_server
    monkeypatch.setenv("SCIM_TOKEN", "t")
    sleeps: list[float] = []
    with make_service(tmp_path, tls_idp(url), ["secure"], sleep=sleeps.append) as svc:
        op = only_op(svc.add_user("tess"))
        assert op.outcome == "failed" and op.attempts == 1 and sleeps == []
        assert "certificate" in op.error and "set options.ca_file" in op.error
        assert any("options.ca_file" in m for m in svc.test_idp("secure").messages)


def test_a_dead_proxy_is_named_without_its_credentials(tmp_path, monkeypatch):
    proxy_port, target_port = closed_port(), closed_port()
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://puser:pr0xy-pw@127.0.0.1:{proxy_port}")
    monkeypatch.setenv("SCIM_TOKEN", "t")
    idp = tls_idp(f"http://127.0.0.1:{target_port}/v2", "    retry: {max_attempts: 2}\n")
    with make_service(tmp_path, idp, ["secure"], sleep=lambda s: None) as svc:
        op = only_op(svc.add_user("pia"))
    assert op.outcome == "failed"
    assert f"cannot reach the proxy http://127.0.0.1:{proxy_port} (HTTP_PROXY)" in op.error
    assert "fix or unset HTTP_PROXY" in op.error
    assert "puser" not in op.error and "pr0xy-pw" not in op.error


@pytest.mark.parametrize("refused", [401, 403])
def test_refused_credentials_name_the_secret_reference_not_the_value(
    tmp_path, monkeypatch, refused
):
    fake = FakeScim("the-right-token")
    if refused == 403:
        fake.fail("POST", 403)
    monkeypatch.setenv("SCIM_TOKEN", "the-right-token" if refused == 403 else "a-wrong-token")
    with make_service(
        tmp_path, tls_idp("https://scim.test/v2"), ["secure"], http_transport=fake.transport()
    ) as svc:
        op = only_op(svc.add_user("rex"))
        assert op.status == refused
        assert "the secret options.token names (env:SCIM_TOKEN)" in op.error
        assert "a-wrong-token" not in op.error and "the-right-token" not in op.error
        assert "env:SCIM_TOKEN" in " ".join(svc.test_idp("secure").messages) or refused == 403
