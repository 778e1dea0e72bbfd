"""A target that echoes the request in its error never makes idprov show, store or log
a secret: the IdP's token or Basic password, a user's plaintext password, whichever
connector and reply shape carries it (a SCIM error, a Bulk reply per operation, an SPML
SOAP fault). Checked end to end through the CLI against an echoing target of the
test's own: the terminal, `outbox list --json`, `log --json`, `status` and the bytes
of the SQLite files."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

TOKEN = "TOKSECRETbearer777"
BASIC = "BasicPwSecret999"
USER_PW = "UserPw#Secret42"
SPML_LONG_PW = "SpmlLongPassword#2024xyz"


class _Echo(BaseHTTPRequestHandler):
    """A hostile target; the first path segment picks how it echoes the request.

    ``/echo``: 400 with a SCIM error whose detail quotes the headers and the body;
    ``/text``: 400 in text, with the Basic credentials decoded too; ``/bulk``:
    advertises Bulk and refuses every operation, quoting the headers and the operation;
    ``/soap``: a SOAP 1.1 Client fault quoting the headers and the envelope;
    ``/spring``: 400 with a JSON error that is not SCIM's, quoting the password sent
    (``\\u``-escaped); ``/spmlcut``: an SPML failure whose text quotes a long password
    across the 300th character. GETs
    answer a ServiceProviderConfig or an empty list (``/getecho`` echoes them too)."""

    def _go(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        headers = dict(self.headers.items())
        auth = self.headers.get("Authorization", "")
        decoded = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
        mode = self.path.split("/")[1]
        said = f"echo headers={headers} decoded={decoded} body={body}"
        status, kind = 400, "application/scim+json"
        if self.command == "GET" and mode not in ("getecho", "soap"):
            status = 200
            if "ServiceProviderConfig" in self.path:
                out: object = {
                    "patch": {"supported": True},
                    "bulk": {"supported": mode == "bulk", "maxOperations": 100},
                    "filter": {"supported": True, "maxResults": 200},
                }
            else:
                out = {"totalResults": 0, "Resources": [], "startIndex": 1, "itemsPerPage": 0}
            data = json.dumps(out).encode()
        elif mode == "soap":
            status, kind = 500, "text/xml"
            data = (
                '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv='
                '"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><soapenv:Fault>'
                f"<faultcode>soapenv:Client</faultcode><faultstring>{escape(said)}"
                "</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
            ).encode()
        elif mode == "bulk" and self.path.endswith("/Bulk"):
            status = 200
            operations = [
                {
                    "method": "POST",
                    "bulkId": op.get("bulkId"),
                    "status": "400",
                    "response": {"status": "400", "detail": f"echo {headers} op={json.dumps(op)}"},
                }
                for op in json.loads(body)["Operations"]
            ]
            data = json.dumps({"Operations": operations}).encode()
        elif mode == "spring":  # a validation error that is not SCIM's, as Spring's
            sent = json.loads(body).get("password") if self.command == "POST" else None
            data = json.dumps({"errors": [{"field": "password", "rejectedValue": sent}]}).encode()
            kind = "application/json"
        elif mode == "spmlcut":  # an SPML reply whose text quotes a password past 290 chars
            status, kind = 400, "text/xml"
            data = (
                '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv='
                '"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
                '<addResponse xmlns="urn:oasis:names:tc:SPML:2:0" status="failure">'
                f"<errorMessage>{'x' * 290} {escape(SPML_LONG_PW)}</errorMessage>"
                "</addResponse></soapenv:Body></soapenv:Envelope>"
            ).encode()
        elif mode == "text":
            kind = "text/plain"
            data = f"bad request. you sent {said}".encode()
        else:
            data = json.dumps({"status": "400", "detail": said}).encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _go  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def echo(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The echoing target's origin (loopback, a free port), with the secrets set."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCIM_TOKEN", TOKEN)
    monkeypatch.setenv("BASIC_PW", BASIC)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def config(write_config, idp: str, connector: str, base_url: str, auth: str) -> None:
    bulk = "      bulk: auto\n      bulk_threshold: 2\n" if connector == "scim2" else ""
    write_config(
        f"""identity_providers:
  - name: {idp}
    connector: {connector}
    options:
      base_url: {base_url}
{auth}      send_password: true
{bulk}applications:
  - name: resident
    identity_providers: [{idp}]
"""
    )


BEARER = "      auth: bearer\n      token: env:SCIM_TOKEN\n"
BASIC_AUTH = "      auth: basic\n      username: svc\n      password: env:BASIC_PW\n"


def assert_nowhere(cli, data_dir: Path, said: str, *secrets: str) -> None:
    """None of ``secrets`` in what the command ``said``, in the outbox, the audit log,
    `status`, or any byte of idprov's database files; and the failure is there."""
    outbox = cli("outbox", "list", "--json").ok().stdout
    log = cli("log", "--json").ok().stdout
    status = cli("status").stdout
    files = b"".join(p.read_bytes() for p in sorted(data_dir.glob("idprov.db*")))
    assert "HTTP 400" in outbox or "SOAP fault" in outbox, outbox  # the echo is kept
    for secret in secrets:
        for where, text in (("terminal", said), ("outbox", outbox), ("log", log)):
            assert secret not in text, f"{secret} in {where}: {text}"
        assert secret not in status, status
        assert secret.encode() not in files, f"{secret} in the database files"
    assert "***" in said + outbox


def test_the_token_and_the_passwords_echoed_in_scim_bulk_replies(cli, write_config, echo, data_dir):
    config(write_config, "bulk", "scim2", f"{echo}/bulk/v2", BEARER)
    Path("in.csv").write_text(
        "username,password,email\n"
        "b1,BulkPw#one1,b1@x.com\nb2,BulkPw#two2,b2@x.com\nb3,BulkPw#three3,b3@x.com\n"
    )
    run = cli("import", "users", "in.csv")
    said = run.stdout + run.stderr
    assert "create user b1: HTTP 400" in said, run
    assert_nowhere(cli, data_dir, said, TOKEN, "BulkPw#one1", "BulkPw#two2", "BulkPw#three3")


def test_bulk_creates_the_target_refused_are_audited_as_failed(cli, write_config, echo):
    config(write_config, "bulk", "scim2", f"{echo}/bulk/v2", BEARER)
    Path("in.csv").write_text("username,email\nb1,b1@x.com\nb2,b2@x.com\nb3,b3@x.com\n")
    cli("import", "users", "in.csv")
    entries = [e for e in cli("log", "--json").items() if e["action"] == "outbound.create"]
    assert sorted(e["target"] for e in entries) == ["b1", "b2", "b3"]
    for entry in entries:
        assert entry["outcome"] == "failed", entry
        assert entry["details"]["status"] == 400
        assert entry["details"]["error"].startswith(f"create user {entry['target']}: HTTP 400")


def test_a_users_password_echoed_from_a_json_body(cli, write_config, echo, data_dir):
    config(write_config, "echo", "scim2", f"{echo}/echo/v2", BEARER)
    run = cli(
        "user", "add", "alice", "--claim", "email=a@x.com", "--password-stdin", input=f"{USER_PW}\n"
    )
    said = run.stdout + run.stderr
    assert "create user alice: HTTP 400" in said, run
    assert_nowhere(cli, data_dir, said, TOKEN, USER_PW)


def test_the_basic_password_echoed_decoded(cli, write_config, echo, data_dir):
    config(write_config, "basic", "scim2", f"{echo}/text/v2", BASIC_AUTH)
    run = cli(
        "user", "add", "bob", "--claim", "email=b@x.com", "--password-stdin", input=f"{USER_PW}\n"
    )
    said = run.stdout + run.stderr
    assert "decoded=***" in said, run
    assert_nowhere(cli, data_dir, said, BASIC, f"svc:{BASIC}", USER_PW)


def test_idp_test_never_shows_the_basic_password_a_target_echoes(cli, write_config, echo):
    config(write_config, "basic", "scim2", f"{echo}/getecho/v2", BASIC_AUTH)
    for args in (("idp", "test", "basic"), ("idp", "test", "basic", "--json")):
        run = cli(*args)
        said = run.stdout + run.stderr
        assert "decoded=***" in said, run
        assert BASIC not in said, said


def test_the_token_and_a_password_echoed_in_an_spml_soap_fault(cli, write_config, echo, data_dir):
    config(write_config, "spml", "spml", f"{echo}/soap/spml", BEARER)
    run = cli(
        "user",
        "add",
        "sam",
        "--claim",
        "email=s@x.com",
        "--password-stdin",
        input="SpmlUserPw#777\n",
    )
    said = run.stdout + run.stderr
    assert "SOAP fault soapenv:Client" in said, run
    assert_nowhere(cli, data_dir, said, TOKEN, "SpmlUserPw#777")


def test_a_short_api_key_is_blanked_too(cli, write_config, echo, data_dir, monkeypatch):
    """A 5-character API key sent alone in its header (only 8 characters and more were)."""
    monkeypatch.setenv("API_KEY", "k3Yq9")
    key = "      auth: header\n      header_name: X-Api-Key\n      token: env:API_KEY\n"
    config(write_config, "echo", "scim2", f"{echo}/echo/v2", key)
    run = cli("user", "add", "carol", "--claim", "email=c@x.com")
    said = run.stdout + run.stderr
    assert "create user carol: HTTP 400" in said, run
    assert_nowhere(cli, data_dir, said, "k3Yq9")


def test_a_password_with_a_quote_and_a_backslash_echoed_json_escaped(
    cli, write_config, echo, data_dir
):
    """A target quotes the JSON it received: `Horse"Battery\\Staple9` comes back as
    `Horse\\"Battery\\\\Staple9` (and escaped twice inside a JSON error's detail), which
    went into the outbox and the audit log as it was."""
    password = 'Horse"Battery\\Staple9'
    config(write_config, "echo", "scim2", f"{echo}/echo/v2", BEARER)
    run = cli(
        "user",
        "add",
        "alice",
        "--claim",
        "email=a@x.com",
        "--password-stdin",
        input=f"{password}\n",
    )
    said = run.stdout + run.stderr
    assert "create user alice: HTTP 400" in said, run
    escaped = json.dumps(password)[1:-1]
    assert_nowhere(cli, data_dir, said, TOKEN, password, escaped, "Battery")


def test_a_non_ascii_password_in_a_validation_error_that_is_not_scims(
    cli, write_config, echo, data_dir
):
    """Spring's `{"errors": [{"rejectedValue": ...}]}` quotes the password `\\u`-escaped
    (`P\\u00e4sswort`), and idprov wrote such an error out again with \\u escapes."""
    password = "Pässwort-2024!"
    config(write_config, "echo", "scim2", f"{echo}/spring/v2", BEARER)
    run = cli(
        "user",
        "add",
        "alice",
        "--claim",
        "email=a@x.com",
        "--password-stdin",
        input=f"{password}\n",
    )
    said = run.stdout + run.stderr
    assert "create user alice: HTTP 400" in said, run
    assert_nowhere(cli, data_dir, said, TOKEN, password, "sswort-2024")


def test_a_long_password_across_the_cut_of_an_spml_reply(cli, write_config, echo, data_dir):
    """An SPML reply's text is cut at 300 characters: cut before it was blanked, a
    password across the cut no longer matched and its first part was kept."""
    config(write_config, "spml", "spml", f"{echo}/spmlcut/spml", BEARER)
    run = cli(
        "user",
        "add",
        "sam",
        "--claim",
        "email=s@x.com",
        "--password-stdin",
        input=f"{SPML_LONG_PW}\n",
    )
    said = run.stdout + run.stderr
    assert "HTTP 400" in said, run
    assert_nowhere(cli, data_dir, said, TOKEN, SPML_LONG_PW[:9])
