"""What the one chokepoint blanks: any connector's TargetError (a third party's too,
with no HTTP in sight) loses the secrets idprov resolved and the passwords it carries;
short ones only in the error of a request that carried them, where they stand as a
value, never every word or letters that match."""

from __future__ import annotations

import gc

import pytest

from idprov.config.secrets import SecretRef
from idprov.connectors.base import Account, TargetError
from idprov.secrecy import note_request


def sent(headers: dict[str, str] | None = None, body: object = None) -> None:
    """This thread sent a request carrying ``headers`` and ``body`` (as idprov's HTTP
    client notes it): a short secret is blanked only in the errors of such a request."""
    note_request(headers or {}, None, body)


def test_any_connectors_error_loses_a_resolved_secret_and_a_users_password(monkeypatch):
    monkeypatch.setenv("PLUGIN_KEY", "PluginKey#1234")
    ref = SecretRef("env:PLUGIN_KEY")  # as a plugin connector's options hold it
    key = ref.reveal()
    account = Account("u1", "dave", {}, password="DavePw#5678")
    exc = TargetError(
        f"refused: key={key} body={{'password': '{account.password}'}}",
        hint=f"the target said {key}",
    )
    shown = f"{exc.message} {exc.hint} {exc} {exc.to_dict()}"
    assert "PluginKey#1234" not in shown
    assert "DavePw#5678" not in shown
    assert exc.message == "refused: key=*** body={'password': '***'}"


def test_a_users_password_is_held_only_while_its_account_exists():
    account = Account("u2", "erin", {}, password="ErinPw#9012")
    assert "ErinPw#9012" not in TargetError("echo ErinPw#9012").message
    del account
    gc.collect()
    assert TargetError("echo ErinPw#9012").message == "echo ErinPw#9012"


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        ('{"userName": "al", "password": "ab"}', '{"userName": "al", "password": "***"}'),
        ("decoded=svc:ab body=", "decoded=svc:*** body="),
        ("password=ab&grant_type=password", "password=***&grant_type=password"),
        ("<password>ab</password>", "<password>***</password>"),
        ("a bad request: abc; a lab", "a bad request: abc; a lab"),
        ("the user hasn'ab approved: 'ab'", "the user hasn'ab approved: '***'"),
    ],
)
def test_a_password_of_two_characters_is_blanked_only_where_it_stands_as_a_value(said, shown):
    account = Account("u3", "al", {}, password="ab")
    sent(body={"userName": "al", "password": account.password})
    assert TargetError(said).message == shown
    del account


def test_a_secret_of_five_characters_is_blanked_as_a_value_not_as_a_word():
    account = Account("u4", "fay", {}, password="k3Yq9")
    sent({"X-Api-Key": "k3Yq9"})
    said = "{'X-Api-Key': 'k3Yq9'} X-Api-Key: k3Yq9\nkey k3Yq9 xk3Yq9y"
    shown = "{'X-Api-Key': '***'} X-Api-Key: ***\nkey k3Yq9 xk3Yq9y"
    assert TargetError(said).message == shown
    del account


def test_a_connector_calling_its_client_directly_has_its_request_secrets_blanked():
    """A third-party connector may send through its HTTP client itself (not through
    idprov's ``send``): a credential only that request carried (a session header it
    made up, a form's secret) is blanked from an error built from the reply too."""
    import httpx

    from idprov.connectors.base import TargetError
    from idprov.connectors.http import HttpOptions
    from idprov.connectors.http_client import ThreadClient

    def echo(request: httpx.Request) -> httpx.Response:
        said = f"refused: session {request.headers['X-Session']} form {request.content.decode()}"
        return httpx.Response(400, text=said)

    options = HttpOptions(base_url="http://127.0.0.1:9/", auth="none", timeout=5)
    client = ThreadClient(options, 1, transport=httpx.MockTransport(echo))
    reply = client.request(
        "POST",
        "http://127.0.0.1:9/login",
        headers={"X-Session": "sess-9f8e7d6c5b4a"},
        data={"client_secret": "form-secret-1234"},
    )
    error = TargetError(f"log in: {reply.text}")
    assert "sess-9f8e7d6c5b4a" not in error.message
    assert "form-secret-1234" not in error.message
    assert error.message.startswith("log in: refused: session *** form")


def test_a_connectors_bug_quoting_a_secret_is_described_without_it(monkeypatch):
    """Not every error is a TargetError: a plugin's bug (a KeyError, a ValueError
    quoting what it was given) is described for the outbox, the report and the
    terminal's "internal error" with the secrets idprov holds blanked too."""
    from idprov.cli.common import as_idprov_error
    from idprov.provisioning.tasks import describe

    monkeypatch.setenv("PLUGIN_KEY", "PluginKey#1234")
    ref = SecretRef("env:PLUGIN_KEY")
    bug = ValueError(f"unexpected reply to key {ref.reveal()}")
    assert describe(bug) == "ValueError: unexpected reply to key ***"
    assert "PluginKey#1234" not in describe(bug, "acme (acme-idprov)")
    internal = as_idprov_error(bug)
    assert internal is not None and "PluginKey#1234" not in internal.message


def test_an_apostrophe_in_a_word_is_no_quote_for_a_short_secret():
    """A token of one letter (a test's, or a careless one) blanked the "t" of every
    "hasn't" a target wrote, so its message no longer said what it said: a quote
    opens a value only where no letter stands before it."""
    account = Account("u5", "gil", {}, password="t")
    sent({"Authorization": "Bearer t"})
    said = "user hasn't approved this consumer; token 't'"
    assert TargetError(said).message == "user hasn't approved this consumer; token '***'"
    del account


@pytest.mark.parametrize(
    ("password", "said"),
    [
        ("true", '{"userName": "al", "active": true, "emails": []}'),
        ("admin", "role: admin, status: 403"),
        ("400", 'HTTP 400: {"status": "400", "detail": "x"}'),
        ("User1", "{'userName': 'User1'}"),
    ],
)
def test_a_short_password_held_elsewhere_leaves_other_errors_as_they_are(password, said):
    """One user's password `admin` (or a test IdP's Basic password) rewrote every error
    of the process: `role: ***`, `"active": ***`, a user named as their password. A short
    secret is blanked only in the error of a request that carried it."""
    sent(body={"userName": "someone-else", "active": True})  # this request carried none
    account = Account("u6", "al", {}, password=password)
    assert TargetError(said).message == said
    sent(body={"userName": "al", "password": account.password})  # this one did
    assert TargetError(said).message != said


def test_a_short_basic_password_is_blanked_in_the_error_of_its_request():
    import base64

    from idprov.secrecy import hold

    class Options:  # an IdP's options, holding its Basic password
        pass

    options = Options()
    hold(options, "admin")
    sent({"Authorization": "Basic " + base64.b64encode(b"svc:admin").decode()})
    said = "you sent svc:admin; role: admin"
    assert TargetError(said).message == "you sent ***; role: ***"


def test_a_short_secret_in_a_refused_header_values_bytes_repr_is_blanked():
    """An HTTP library refusing a header value quotes it as Python bytes
    (``Illegal header value b'k3Yq9'``): the ``b`` before the quote is a letter, so a
    short secret there was not taken as standing as a value."""
    from idprov.secrecy import note_request

    account = Account("u6", "hal", {}, password="k3Yq9")
    note_request({"X-Api-Key": "k3Yq9"})
    assert TargetError("Illegal header value b'k3Yq9'").message == "Illegal header value b'***'"
    del account
