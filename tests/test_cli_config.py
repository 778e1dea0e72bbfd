"""`idprov config validate|show`, `--config` and discovery as the CLI sees them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

SAMPLE_CONFIGS = Path(__file__).resolve().parents[1] / "sample-configs"

SECRET_VALUE = "s3cr3t-VALUE-4242-never-print-me"
SECRETS_CONFIG = """\
identity_providers:
  - name: corp-scim
    connector: scim2
    options:
      base_url: https://scim.example.com/scim/v2
      auth: bearer
      token: env:IDPROV_TEST_SCIM_TOKEN
  - name: partner
    connector: scim2
    options:
      base_url: https://partner.example.net/scim/v2
      auth: basic
      username: idprov
      password: file:{password_file}
  - name: vendor
    connector: scim2
    options:
      base_url: https://vendor.example.org/scim/v2
      auth: header
      header_name: X-Api-Key
      token: keyring:idprov/vendor
"""


def test_validate_embedded_default(cli):
    r = cli("config", "validate").ok()
    assert "<embedded default> is valid" in r.stdout
    result = cli("config", "validate", "--json").json()
    assert result == {
        "valid": True,
        "source": "<embedded default>",
        "userstores": ["PRIMARY"],
        "identity_providers": [],
        "applications": ["resident"],
        "missing_secrets": [],
        "ignored_connectors": [],
        "disabled_idp_problems": [],
        "username_clashes": [],
        "unknown_scope_roles": [],
        "unchecked_scopes": [],
        "unused_identity_providers": [],
        "unsafe_settings": [],
    }


def test_validate_a_file(cli, write_config):
    path = write_config(
        "userstores:\n  - domain: PRIMARY\n  - domain: EXT\n    type: sqlite\n    path: ext.db\n"
        "applications:\n  - name: hr-feed\n"
    )
    result = cli("--config", str(path), "config", "validate", "--json").json()
    assert result["source"] == str(path)
    assert result["userstores"] == ["PRIMARY", "EXT"]
    assert result["applications"] == ["resident", "hr-feed"]
    r = cli("--config", str(path), "config", "validate").ok()
    assert "2 userstore(s), 0 identity provider(s), 2 application(s)" in r.stdout


def test_validate_reports_where_the_error_is(cli, write_config):
    path = write_config("version: 1\nuserstores:\n  - domain: PRIMARY\n    polcy: {}\n")
    err = cli("config", "validate").fails(2)
    assert f"{path}:4:5: userstores[0].polcy: unknown key 'polcy'" in err
    error = cli("config", "validate", "--json").error(2)
    assert error["code"] == "config"
    assert error["message"].startswith(f"{path}:4:5: ")


def test_malformed_yaml_through_the_cli(cli, write_config):
    path = write_config("userstores:\n  - domain: [PRIMARY\n    type: sqlite\n")
    error = cli("config", "show", "--json").error(2)
    assert error["message"].startswith(f"{path}:3:9: invalid YAML")
    assert error["hint"]


def test_show_fills_in_defaults(cli, write_config, tmp_path):
    write_config("data_dir: state\nclaims:\n  - name: badge_id\n")
    data = cli("config", "show", "--json").json()
    assert data["source"] == str(tmp_path / "idprov.yaml")
    assert data["data_dir"] == str(tmp_path / "state")
    (store,) = data["userstores"]
    assert store["domain"] == "PRIMARY"
    assert store["policy"]["preset"] == "default"
    assert store["policy"]["username_pattern"] == r"^\S{1,254}$"
    assert [a["name"] for a in data["applications"]] == ["resident"]
    assert "badge_id" in data["known_claims"] and "email" in data["known_claims"]
    text = cli("config", "show").ok().stdout
    assert f"# the effective configuration of {tmp_path / 'idprov.yaml'}" in text
    assert "username_pattern: ^\\S{1,254}$" in text
    assert "- name: badge_id" in text
    # what `config show` prints is a configuration that validates, and means the same
    shown = tmp_path / "elsewhere" / "shown.yaml"
    shown.parent.mkdir()
    shown.write_text(text)
    cli("--config", str(shown), "config", "validate").ok()
    again = cli("--config", str(shown), "config", "show", "--json").json()
    assert {**again, "source": data["source"]} == data


@pytest.fixture
def secrets_config(write_config, tmp_path, monkeypatch, keyring_backend):
    """IdPs whose secrets are in an env variable, a file and the keyring, all set."""
    password_file = tmp_path / "partner.password"
    password_file.write_text(SECRET_VALUE + "-file\n")
    password_file.chmod(0o600)
    monkeypatch.setenv("IDPROV_TEST_SCIM_TOKEN", SECRET_VALUE + "-env")
    keyring_backend("memory").items[("idprov", "vendor")] = SECRET_VALUE + "-keyring"
    write_config(SECRETS_CONFIG.format(password_file=password_file))
    return password_file


def test_config_show_never_prints_a_secret(cli, secrets_config):
    runs = [
        cli("config", "show"),
        cli("config", "show", "--json"),
        cli("config", "validate"),
        cli("config", "validate", "--json"),
        cli("config", "validate", "--strict"),
    ]
    for run in runs:
        run.ok()
        assert SECRET_VALUE not in run.stdout + run.stderr
    options = [i["options"] for i in runs[1].json()["identity_providers"]]
    assert options[0]["token"] == "env:IDPROV_TEST_SCIM_TOKEN (set)"
    assert options[1]["password"] == f"file:{secrets_config} (set)"
    assert options[2]["token"] == "keyring:idprov/vendor (set)"
    assert "    token: env:IDPROV_TEST_SCIM_TOKEN\n" in runs[0].stdout
    assert "# secret env:IDPROV_TEST_SCIM_TOKEN: set\n" in runs[0].stdout
    assert runs[3].json()["missing_secrets"] == []


def test_validate_reports_missing_secrets(cli, secrets_config, monkeypatch, keyring_backend):
    monkeypatch.delenv("IDPROV_TEST_SCIM_TOKEN")
    secrets_config.unlink()
    keyring_backend("fail")
    result = cli("config", "validate", "--json").json()
    assert result["missing_secrets"] == [
        "env:IDPROV_TEST_SCIM_TOKEN",
        f"file:{secrets_config}",
        "keyring:idprov/vendor",
    ]
    assert "secret env:IDPROV_TEST_SCIM_TOKEN is not set" in cli("config", "validate").ok().stdout
    error = cli("config", "validate", "--strict", "--json").refusal(2)
    assert error["code"] == "secret"
    assert "env:IDPROV_TEST_SCIM_TOKEN" in error["message"]
    shown = cli("config", "show", "--json").json()["identity_providers"][2]["options"]
    assert shown["token"] == "keyring:idprov/vendor (missing)"


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("token: hunter2-literal", "hunter2-literal"),
        ("token: 'Bearer abc.def'", "Bearer abc.def"),
        ("token: vault:secret/scim", "vault:secret/scim"),
    ],
)
def test_literal_secrets_in_config_are_refused(cli, write_config, state, line, value):
    path = write_config(
        "identity_providers:\n  - name: corp\n    connector: scim2\n    options:\n"
        f"      base_url: https://scim.example.com/v2\n      {line}\n"
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"].startswith(f"{path}:6:7: identity_providers[0].options.token: ")
    assert "not literal values" in error["message"]
    assert value not in error["message"] + (error["hint"] or "")
    assert value not in cli("user", "add", "alice").fails(2)
    assert state.counts()["users"] == 0


@pytest.mark.parametrize(
    "argv",
    [
        ("user", "add", "alice"),
        ("role", "add", "staff"),
        ("user", "list"),
        ("log",),
    ],
)
def test_a_wrong_config_writes_nothing(cli, write_config, data_dir, tmp_path, argv):
    write_config("userstores:\n  - domain: PRIMARY\n    path: users.db\n    read_only: maybe\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert "read_only" in cli(*argv).fails(2)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not data_dir.exists()


def test_a_config_broken_later_changes_nothing(cli, write_config, state):
    path = write_config("userstores:\n  - domain: PRIMARY\n")
    cli("user", "add", "alice").ok()
    before = state.dump()
    path.write_text("userstores:\n  - domain: PRIMARY\n  - domain: PRIMARY\n")
    assert "duplicate domain" in cli("user", "add", "bob").fails(2)
    assert "duplicate domain" in cli("user", "delete", "alice", "--yes").fails(2)
    assert state.dump() == before


def test_discovery_order_through_the_cli(cli, tmp_path, config_dir, monkeypatch):
    places = {
        "explicit": tmp_path / "explicit" / "idprov.yaml",
        "env": tmp_path / "env" / "idprov.yaml",
        "cwd": tmp_path / "idprov.yaml",
        "user": config_dir / "idprov.yaml",
    }
    for name, path in places.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"data_dir: data-{name}\n")
    monkeypatch.setenv("IDPROV_CONFIG", str(places["env"]))

    def source(*args):
        return cli(*args, "config", "show", "--json").json()["source"]

    assert source("--config", str(places["explicit"])) == str(places["explicit"])
    assert source() == str(places["env"])
    cli("user", "add", "alice").ok()
    assert (tmp_path / "env" / "data-env" / "idprov.db").is_file()
    monkeypatch.delenv("IDPROV_CONFIG")
    assert source() == str(places["cwd"])
    places["cwd"].unlink()
    assert source() == str(places["user"])
    places["user"].unlink()
    assert source() == "<embedded default>"


def test_missing_config_file_is_a_usage_error(cli, tmp_path, monkeypatch):
    err = cli("--config", str(tmp_path / "nope.yaml"), "user", "list").fails(2)
    assert "does not exist" in err
    monkeypatch.setenv("IDPROV_CONFIG", str(tmp_path / "nope.yaml"))
    assert "IDPROV_CONFIG" in cli("user", "list").fails(2)


def test_relative_store_paths_follow_the_config_file(cli, tmp_path):
    conf = tmp_path / "etc" / "idprov" / "idprov.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "data_dir: var\nuserstores:\n  - domain: PRIMARY\n"
        "  - domain: EXT\n    type: sqlite\n    path: stores/ext.db\n"
    )
    (tmp_path / "work").mkdir()
    cli("--config", str(conf), "user", "add", "EXT/alice").ok()
    cli("--config", str(conf), "user", "add", "bob").ok()
    assert (conf.parent / "stores" / "ext.db").is_file()
    assert (conf.parent / "var" / "idprov.db").is_file()
    assert not (tmp_path / "stores").exists() and not (tmp_path / "var").exists()


# ---- the sample configurations


SAMPLES = sorted(SAMPLE_CONFIGS.glob("*.yaml"))


def test_there_are_sample_configs():
    assert {p.name for p in SAMPLES} >= {"minimal.yaml", "full.yaml"}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_configs_validate(cli, sample):
    result = cli("--config", str(sample), "config", "validate", "--json").json()
    assert result["valid"] is True
    assert result["source"] == str(sample)


def test_full_sample_config_works(cli, tmp_path):
    """The full sample in use, its identity providers pointed at a closed loopback
    port (nobody here holds a provisioning role, so nothing is sent)."""
    text = (SAMPLE_CONFIGS / "full.yaml").read_text()
    text, n = re.subn(r"https://[a-z.]+\.example\.(com|net|org)", "http://127.0.0.1:9", text)
    assert n >= 2
    (tmp_path / "idprov.yaml").write_text(text)
    config = cli("config", "show", "--json").json()
    domains = [u["domain"] for u in config["userstores"]]
    assert len(domains) >= 2 and domains[0] == "PRIMARY"
    assert config["identity_providers"] and config["claims"]
    assert {i["connector"] for i in config["identity_providers"]} == {"scim2"}
    assert len(config["applications"]) >= 2
    writable = [u for u in config["userstores"] if not u["read_only"]]
    for store in writable:
        policy = store["policy"]
        claims = ["-c", "email=ada@example.com", "-c", "given_name=Ada", "-c", "family_name=L"]
        claims += ["-c", "employee_number=100001", "-c", "badge_id=123456"]
        assert set(policy["required_claims"]) <= {
            "email",
            "given_name",
            "family_name",
            "employee_number",
            "badge_id",
        }
        result = cli("user", "add", f"{store['domain']}/ada.lovelace", *claims, "--json").json()
        assert result["outbound"]["ok"] is True
        assert {i["idp"]: i["done"] for i in result["outbound"]["idps"]} == {"corp-scim": 0}
        cli("user", "show", f"{store['domain']}/ada.lovelace").ok()
    page = cli("user", "list", "--json").json()
    assert page["total"] == len(writable)
    read_only = [u for u in config["userstores"] if u["read_only"]]
    for store in read_only:
        error = cli("user", "add", f"{store['domain']}/ada.lovelace", "--json").error(5)
        assert error["code"] == "read_only"


def test_the_csv_files_columns_are_reserved_claim_names(cli, write_config, tmp_path, state):
    """Every column of idprov's CSV files that is not a claim (the export's, the
    importer's, the rejects file's) is refused as a claim name when the file loads."""
    import csv

    from idprov.config.claims import RESERVED_CLAIM_NAMES

    cli("role", "add", "staff").ok()
    cli("user", "add", "alice", "-c", "title=T", "--role", "staff").ok()
    exported = cli("export", "users", "-").ok().stdout.splitlines()[0].split(",")
    (tmp_path / "in.csv").write_text("username,password_hash,password\nbad user,,\n")
    cli("import", "users", "in.csv", "--rejects", "rej.csv")
    with open(tmp_path / "rej.csv", newline="") as f:
        rejects = next(csv.reader(f))
    fixed = {*exported, *rejects} - {"title"}
    assert fixed == {"username", "roles", "password", "password_hash", "line", "error"}
    assert fixed <= set(RESERVED_CLAIM_NAMES)
    before = state.dump()
    for name in sorted(fixed):
        path = write_config(f"claims:\n  - name: {name}\n")
        error = cli("config", "validate", "--json").error(2)
        assert error["message"].startswith(f"{path}:2:5: claims[0].name: {name!r} cannot be a")
        assert f"{name!r} cannot be a claim name" in cli("user", "list").fails(2)
    assert state.dump() == before


def test_validate_finds_a_missing_read_only_store(cli, write_config, tmp_path):
    path = write_config(
        "userstores:\n  - domain: PRIMARY\n  - domain: LEGACY\n"
        "    path: legacy.db\n    read_only: true\n"
    )
    error = cli("config", "validate", "--json").error(2)
    assert error["message"] == (
        f"{path}:4:5: userstores[1].path: the read-only userstore LEGACY names "
        f"{tmp_path / 'legacy.db'}, which does not exist"
    )
    assert "never created" in error["hint"]
    (tmp_path / "legacy.db").mkdir()
    assert "which is a directory" in cli("config", "validate").fails(2)
    (tmp_path / "legacy.db").rmdir()
    # commands that need the store say the same (README, Troubleshooting); the others work
    cli("user", "add", "alice").ok()
    assert cli("user", "list", "--domain", "PRIMARY").ok().stdout.startswith("username")
    err = cli("user", "list").fails(1)
    assert f"the read-only userstore LEGACY names {tmp_path / 'legacy.db'}" in err


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("x: &a [*a]\n", "1:4: x[0]: this alias repeats"),
        ("version: 1\nuserstores:\n\t- domain: PRIMARY\n", "3:1: invalid YAML: a tab character"),
    ],
)
def test_yaml_a_user_can_write_is_a_located_error(cli, write_config, text, says):
    path = write_config(text)
    assert f"{path}:{says}" in cli("config", "validate").fails(2)


def test_a_config_path_that_is_a_directory(cli, tmp_path):
    (tmp_path / "conf.yaml").mkdir()
    error = cli("--config", "conf.yaml", "config", "validate", "--json").error(2)
    assert error["message"] == "--config names conf.yaml, which is a directory"


def test_validate_does_not_make_a_postgresql_state(cli, write_config, postgres, tmp_path):
    """Its check of the ledger reads a state only where one exists: a validate of a
    new configuration made the schema and every table of the state."""
    secret = tmp_path / "pg-password"
    secret.write_text(postgres.password + "\n")
    keys = f"url: '{postgres.url}', password: 'file:{secret}', sslmode: disable"
    config = write_config(f"state: {{{keys}, schema: idprov}}\n")
    schema = "SELECT count(*) FROM pg_namespace WHERE nspname = 'idprov'"

    cli("--config", str(config), "config", "validate").ok()
    assert postgres.rows(schema) == [(0,)]

    cli("--config", str(config), "log").ok()  # a command that uses the state makes it
    postgres.execute(
        "INSERT INTO idprov.ledger (idp, kind, local_id, domain, label, remote_id, state,"
        " updated_at) VALUES ('gone', 'user', 'u1', 'PRIMARY', 'alice', 'r1', 'present',"
        " '2026-01-01T00:00:00.000Z')"
    )
    run = cli("--config", str(config), "config", "validate").ok()
    assert "gone" in run.stderr, "an existing state is still checked"


def test_validate_warns_when_the_username_template_drops_the_domain(cli, write_config):
    """Trial: PRIMARY/xdom and PARTNERS/xdom, pushed under the default username
    template {UN}, map to one target userName: the second's create is refused."""
    idp = (
        "identity_providers:\n  - name: crm\n    connector: scim2\n"
        "    options: {base_url: 'https://crm.test/v2', auth: bearer, token: 'env:T'}\n"
    )
    stores = "userstores:\n  - domain: PRIMARY\n  - domain: PARTNERS\n    path: p.db\n"
    path = write_config(stores + idp)
    result = cli("--config", str(path), "config", "validate", "--json").json()
    [warning] = result["username_clashes"]
    assert warning.startswith("identity provider crm: username '{UN}' drops the userstore")
    assert "two of PRIMARY, PARTNERS map to one account there" in warning
    assert "(username: '{UD}/{UN}')" in warning
    said = " ".join(cli("--config", str(path), "config", "validate").ok().stdout.split())
    assert "identity provider crm: username '{UN}' drops the userstore domain" in said
    kept = write_config(stores + idp + "    username: '{UD}/{UN}'\n")
    assert (
        cli("--config", str(kept), "config", "validate", "--json").json()["username_clashes"] == []
    )
    alone = write_config(idp)
    assert (
        cli("--config", str(alone), "config", "validate", "--json").json()["username_clashes"] == []
    )


def test_a_missing_secret_of_an_application_names_its_own_line(cli, tmp_path, monkeypatch):
    """A file without the `resident` application (added first when not declared): the
    error of a secret that cannot be read named the next application's line and index."""
    monkeypatch.delenv("NOPE_TOKEN_A", raising=False)
    monkeypatch.delenv("NOPE_TOKEN_B", raising=False)
    path = tmp_path / "idprov.yaml"
    path.write_text(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\napplications:\n  - name: crm\n"
        "    inbound_token: env:NOPE_TOKEN_A\n  - name: hr\n    inbound_token: env:NOPE_TOKEN_B\n"
    )
    error = cli("--config", str(path), "config", "validate", "--strict", "--json").refusal(2)
    assert error["message"].startswith(f"{path}:5:5: applications[0].inbound_token: secret")
    assert f"applications[1].inbound_token (env:NOPE_TOKEN_B, {path}:7:5)" in error["message"]


def test_strict_json_refusal_of_unsafe_settings_lists_them(
    cli, write_config, tmp_path, monkeypatch
):
    """A script running `config validate --strict --json` reads what to fix from
    ``unsafe_settings`` on stdout, as without --strict; the refusal is said on stderr
    too, with the configuration error's exit code."""
    monkeypatch.setenv("IDPROV_TEST_SCIM_TOKEN", "TOKsecret-strict-json-1")
    path = write_config(
        f"data_dir: {tmp_path / 'data'}\nidentity_providers:\n"
        "  - name: corp\n    connector: scim2\n    options:\n"
        "      base_url: https://127.0.0.1:19044/v2\n      auth: bearer\n"
        "      token: env:IDPROV_TEST_SCIM_TOKEN\n      verify_tls: false\n"
        "applications:\n  - name: resident\n    identity_providers: [corp]\n"
    )
    warned = cli("--config", str(path), "config", "validate", "--json").json()
    run = cli("--config", str(path), "config", "validate", "--strict", "--json")
    assert run.exit_code == 2, run
    document = json.loads(run.stdout)
    assert document["valid"] is False
    assert document["unsafe_settings"] == warned["unsafe_settings"]
    assert [p["code"] for p in document["unsafe_settings"]] == ["tls_unchecked"]
    assert "ca_file" in document["unsafe_settings"][0]["hint"]
    error = json.loads(run.stderr)["error"]
    assert document["refused"] == error and error["code"] == "tls_unchecked"
    assert "TOKsecret-strict-json-1" not in run.stdout + run.stderr
    assert cli("--config", str(path), "config", "validate", "--strict").fails(2)
