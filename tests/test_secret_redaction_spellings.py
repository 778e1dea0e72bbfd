"""A target echoes a secret as it received it, not as idprov holds it: percent-encoded
in a form, escaped in JSON (once or twice), in XML or in a Python repr. Each spelling is
blanked, and a connector's text is blanked before it is cut (a secret across the cut
kept its first part). Also: Google's random initial password is held, and a relayed
push's unexpected failure is blanked before it is logged and relayed."""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from idprov.config.secrets import SecretRef
from idprov.connectors.base import Account, TargetError
from idprov.connectors.http import HttpOptions, reply_text
from idprov.connectors.http_client import ThreadClient
from idprov.secrecy import note_request

LONG_PW = "LongSecretPassword-2024-abcdefgh"


def client(handler: Any) -> ThreadClient:
    options = HttpOptions(base_url="http://127.0.0.1:9/", auth="none", timeout=5)
    return ThreadClient(options, 1, transport=httpx.MockTransport(handler))


def echo_raw_body(request: httpx.Request) -> httpx.Response:
    return httpx.Response(400, text="bad request: " + request.content.decode())


def test_a_client_secret_echoed_percent_encoded_from_the_form(monkeypatch):
    """A base64-style OAuth client secret goes in the token request's form as
    `q8Z%2Bk%2F3xY9w%3DLm~t.Pz`: a token endpoint echoing its raw body kept it."""
    monkeypatch.setenv("F16_CS", "q8Z+k/3xY9w=Lm~t.Pz")
    ref = SecretRef("env:F16_CS")
    reply = client(echo_raw_body).request(
        "POST",
        "http://127.0.0.1:9/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "app",
            "client_secret": ref.reveal(),
        },
    )
    error = TargetError(f"token: HTTP 400: {reply_text(reply)}")
    assert "q8Z" not in error.message, error.message
    assert error.message.endswith("client_id=app&client_secret=***")


@pytest.mark.parametrize(
    "password", ['Pa"ss\\word-2024', "Pässwort-2024!", "Tab\there-2024", "a<b>&'c\"d-2024"]
)
def test_every_spelling_of_a_held_password_is_blanked(password):
    account = Account("u1", "alice", {}, password=password)
    from html import escape
    from urllib.parse import quote, quote_plus

    once = json.dumps(password)[1:-1]
    spelled = [
        password,
        once,
        json.dumps(password, ensure_ascii=False)[1:-1],
        json.dumps(once)[1:-1],  # JSON quoted in a JSON error's detail
        quote(password, safe=""),
        quote_plus(password),
        escape(password),
        repr(password)[1:-1],
    ]
    for spelling in spelled:
        said = f"refused {{'password': '{spelling}'}} as sent"
        assert TargetError(said).message == "refused {'password': '***'} as sent", spelling
    del account


def test_a_short_password_escaped_twice_is_blanked():
    """`\\"password\\": \\"ab1\\"` (JSON quoted in JSON): a backslash ends a value too."""
    account = Account("u2", "al", {}, password="ab1")
    note_request({}, None, json.dumps({"userName": "al", "password": account.password}))
    said = 'detail: "{\\"userName\\": \\"al\\", \\"password\\": \\"ab1\\"}"'
    assert TargetError(said).message == said.replace("ab1", "***")


def cut_across(secret: str, at: int, before: str = "") -> str:
    """Text in which ``secret`` begins 9 characters before ``at`` once ``before`` (the
    start of the JSON it is written in) precedes it."""
    return "x" * (at - len(before) - 10) + " " + secret


def test_scims_fallback_blanks_before_it_cuts():
    from idprov.connectors.scim_wire import scim2_error

    account = Account("u3", "al", {}, password=LONG_PW)
    said = scim2_error(
        {"errors": [{"rejectedValue": cut_across(LONG_PW, 300, '{"errors": [{"rejectedValue": "')}]}
    )
    assert LONG_PW[:5] not in TargetError(said).message
    del account


def test_salesforce_record_errors_are_blanked_before_they_are_cut():
    from idprov.connectors.salesforce_api import record_error

    account = Account("u4", "al", {}, password=LONG_PW)
    reply = {
        "errors": [
            {
                "statusCode": "X",
                "message": cut_across(LONG_PW, 2000, '[{"statusCode": "X", "message": "'),
            }
        ]
    }
    assert LONG_PW[:5] not in record_error(reply, "create user al").message
    del account


def test_salesforce_inactive_users_errors_are_blanked_before_they_are_cut():
    from idprov.connectors.salesforce import SalesforceConnector

    account = Account("u5", "al", {}, password=LONG_PW)
    connector = SimpleNamespace(idp=SimpleNamespace(name="sf"))
    failed = {
        "005A": {"errors": [{"message": cut_across(LONG_PW, 500, '[{"message": "')}]},
        "005B": {"errors": [{"message": cut_across(LONG_PW, 1000, '[{"message": "')}]},
    }
    error = SalesforceConnector._inactive_refused(
        connector,  # type: ignore[arg-type]
        "00G000000000001",
        {"005A": "al@example.com"},
        failed,
    )
    assert LONG_PW[:5] not in error.message, error.message
    del account


def test_an_spml_faults_detail_is_blanked_before_it_is_cut():
    from idprov.connectors.spml_wire import SOAP, fault_error, parse_xml, soap_body

    account = Account("u6", "al", {}, password=LONG_PW)
    envelope = (
        f'<e:Envelope xmlns:e="{SOAP}"><e:Body><e:Fault><faultcode>e:Client</faultcode>'
        f"<faultstring>bad</faultstring><detail>{cut_across(LONG_PW, 300)}</detail>"
        "</e:Fault></e:Body></e:Envelope>"
    )
    fault = soap_body(parse_xml(envelope.encode()))
    assert LONG_PW[:5] not in fault_error(fault, "create user al", 500).message
    del account


def test_googles_random_initial_password_is_held_while_its_account_is_pushed():
    """A create without send_password sends a random password nobody knows: an echo of
    the insert body kept it, a working password of the new account."""
    from idprov.connectors.google import GoogleConnector
    from idprov.connectors.google_api import GoogleOptions

    options = GoogleOptions(credentials=SecretRef("env:K"), subject="a@example.com")
    connector = GoogleConnector(None, options, None)  # type: ignore[arg-type]
    account = Account("1", "zoe", {"name.givenName": "Zoe"})
    body = connector.user_body(account, create=True)
    error = TargetError(f"create user zoe@example.com: HTTP 400: {json.dumps(body)}")
    assert body["password"] not in error.message
    assert '"password": "***"' in error.message


def test_a_relayed_push_failing_unexpectedly_is_blanked_in_the_log_and_the_answer(caplog):
    from idprov.inbound.push_relay import RelayServer

    account = Account("u7", "al", {}, password=LONG_PW)
    failed: Future[Any] = Future()
    failed.set_exception(ValueError(f"unexpected reply {{'password': '{LONG_PW}'}}"))
    relay = object.__new__(RelayServer)
    relay.submit = lambda key, change: failed  # type: ignore[method-assign]
    answers: list[dict[str, Any]] = []
    message = {"id": 1, "rows": [], "passwords": {}, "claims": [], "fresh": [], "key": ["k"]}
    with caplog.at_level(logging.ERROR, logger="idprov.serve"):
        relay._take(message, answers.append, set())
    assert answers == [{"id": 1, "error": "unexpected reply {'password': '***'}"}]
    assert LONG_PW not in caplog.text and "***" in caplog.text
    del account


def test_the_passwords_of_accounts_gone_leave_the_index(monkeypatch):
    """Errors look secrets up by what their text holds, however many are held; the
    passwords of accounts pushed and gone leave that index too (a long `serve`)."""
    import gc

    from idprov import secrecy

    monkeypatch.setattr(secrecy, "_index", {})
    monkeypatch.setattr(secrecy, "_always", set())
    monkeypatch.setattr(secrecy, "_prune_at", 256)  # pruned at 256, 512, 1024 entries
    gone = [Account(str(i), f"u{i}", {}, password=f"Gone#{i:04d}pw") for i in range(600)]
    assert "***" in TargetError("echo Gone#0007pw").message
    del gone
    gc.collect()
    kept = [
        Account(str(i), f"k{i}", {}, password=f"Kept#{i:04d}pw") for i in range(450)
    ]  # 1,024 entries: pruned
    indexed = set().union(*secrecy._index.values())
    assert {value for _, value in indexed} == {a.password for a in kept}
    assert TargetError("echo Gone#0007pw Kept#0007pw").message == "echo Gone#0007pw ***"
