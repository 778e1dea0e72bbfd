"""Configuration: strict YAML with located errors, discovery, paths, secret references."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from idprov.config import (
    PRIMARY,
    RESIDENT,
    Config,
    SqliteUserstoreConfig,
    discover,
    load_config,
    load_file,
    load_text,
)
from idprov.config.loader import parse_yaml
from idprov.config.schema import build
from idprov.config.secrets import SecretRef, get_keyring_secret, set_keyring_secret
from idprov.errors import ConfigError, ExitCode, NotFoundError, SecretError


def error_of(text: str, source: str = "idprov.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(text, source)
    assert info.value.exit_code == ExitCode.USAGE
    return info.value


# ---- what a valid file gives


def test_empty_file_is_the_default():
    config = load_text("", "empty.yaml")
    assert [(u.domain, u.type) for u in config.userstores] == [(PRIMARY, "sqlite")]
    assert [a.name for a in config.applications] == [RESIDENT]
    assert config.identity_providers == []
    assert config.source == "empty.yaml"


def test_userstore_without_type_is_sqlite():
    config = load_text("userstores:\n  - domain: PRIMARY\n    path: users.db\n", "x.yaml")
    (store,) = config.userstores
    assert isinstance(store, SqliteUserstoreConfig)
    assert store.path == "users.db"


def test_declared_claims_join_the_built_in_ones():
    config = load_text(
        "claims:\n"
        "  - name: badge_id\n    pattern: '^[0-9]{6}$'\n    max_length: 6\n"
        "  - name: projects\n    multi_valued: true\n",
        "x.yaml",
    )
    claims = config.claim_definitions()
    assert claims["badge_id"].pattern == "^[0-9]{6}$"
    assert claims["badge_id"].max_length == 6
    assert claims["projects"].multi_valued
    assert "email" in claims and "given_name" in claims


def test_identity_providers_and_applications():
    config = load_text(
        "identity_providers:\n"
        "  - name: corp-scim\n    connector: scim2\n"
        "    options: {base_url: 'https://scim.example.com/v2'}\n"
        "    provisioning_roles: [staff]\n"
        "applications:\n  - name: hr-feed\n    identity_providers: [corp-scim]\n",
        "x.yaml",
    )
    (idp,) = config.identity_providers
    assert (idp.name, idp.connector, idp.provisioning_roles) == ("corp-scim", "scim2", ["staff"])
    assert idp.options == {"base_url": "https://scim.example.com/v2"}
    assert config.application("hr-feed").identity_providers == ["corp-scim"]
    assert config.application(RESIDENT).identity_providers == []


# ---- errors name file, line, column and key


def test_malformed_yaml_names_file_line_and_column(tmp_path):
    path = tmp_path / "idprov.yaml"
    path.write_text("version: 1\nuserstores:\n  - domain: [PRIMARY\n    type: sqlite\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.message.startswith(f"{path}:4:9: invalid YAML: ")
    assert info.value.location == f"{path}:4:9"
    assert info.value.hint


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("version: 1\nuserstores:\n  - domain: PRIMARY\n   type: sqlite\n", "4:4"),
        ('version: 1\nclaims:\n  - name: "badge\n', "4:1"),
        ("version: 1\n\tuserstores: []\n", "2:1"),
    ],
)
def test_more_malformed_yaml_is_located(text, where):
    assert error_of(text).message.startswith(f"idprov.yaml:{where}: invalid YAML: ")


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("versoin: 1\n", "idprov.yaml:1:1: versoin", "unknown key 'versoin'"),
        (
            "userstores:\n  - domain: PRIMARY\n    polcy: {}\n",
            "idprov.yaml:3:5: userstores[0].polcy",
            "unknown key 'polcy' (known keys here: description, domain, path, policy,",
        ),
        (
            "userstores:\n  - domain: PRIMARY\n    policy:\n      username_patern: x\n",
            "idprov.yaml:4:7: userstores[0].policy.username_patern",
            "known keys here: password_pattern, preset, required_claims, "
            "role_name_pattern, username_pattern",
        ),
        (
            "identity_providers:\n  - name: a\n    connector: scim2\n    retry: {tries: 3}\n",
            "idprov.yaml:4:13: identity_providers[0].retry.tries",
            "unknown key 'tries'",
        ),
    ],
)
def test_unknown_keys_name_the_key_path_and_line(text, where, says):
    message = error_of(text).message
    assert message.startswith(where + ": ")
    assert says in message


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("version: 2\n", "1:1: version", "expected one of 1, got int 2"),
        ("userstores: {}\n", "1:1: userstores", "expected a list"),
        ("userstores:\n  - read_only: 'yes'\n", "2:5: userstores[0].read_only", "true or false"),
        (
            "userstores:\n  - policy:\n      required_claims: email\n",
            "3:7: userstores[0].policy.required_claims",
            "expected a list",
        ),
        ("claims:\n  - name: badge\n    max_length: ten\n", "3:5: claims[0].max_length", "integer"),
        ("claims:\n  - badge\n", "2:5: claims[0]", "expected a mapping"),
        ("- a\n- b\n", "1:1: (top level)", "expected a mapping, got a list"),
        (
            "userstores:\n  - domain: PRIMARY\n    description: 2024-01-01\n",
            "3:5: userstores[0].description",
            "expected a string",
        ),
        ("userstores:\n  - type: oracle\n", "2:5: userstores[0].type", "unknown type 'oracle'"),
        ("identity_providers:\n  - name: x\n", "2:5: identity_providers[0]", "'connector'"),
    ],
)
def test_wrong_types_are_located(text, where, says):
    message = error_of(text).message
    assert message.startswith(f"idprov.yaml:{where}: "), message
    assert says in message


@pytest.mark.parametrize(
    ("text", "where", "key"),
    [
        ("version: 1\nversion: 1\n", "2:1", "version"),
        (
            "userstores:\n  - domain: PRIMARY\n    policy:\n"
            "      username_pattern: a\n      username_pattern: b\n",
            "5:7",
            "userstores[0].policy.username_pattern",
        ),
        ("1: a\n'1': b\n", "2:1", "1"),
    ],
)
def test_duplicate_yaml_keys_are_errors(text, where, key):
    error = error_of(text)
    assert error.message.startswith(f"idprov.yaml:{where}: {key}: duplicate key")
    assert error.hint


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        (
            "userstores:\n  - domain: PRIMARY\n  - domain: primary\n",
            "3:5: userstores[1].domain",
            "duplicate domain 'primary'",
        ),
        ("userstores:\n  - domain: OTHER\n", "1:1: userstores", "domain PRIMARY"),
        (
            "userstores:\n  - domain: PRIMARY\n  - domain: A/B\n",
            "3:5: userstores[1].domain",
            "no '/'",
        ),
        ("claims:\n  - name: email\n", "2:5: claims[0].name", "built in"),
        ("claims:\n  - name: Badge\n", "2:5: claims[0].name", "lower_snake_case"),
        (
            "claims:\n  - name: badge\n  - name: badge\n",
            "3:5: claims[1].name",
            "duplicate name 'badge'",
        ),
        (
            "userstores:\n  - domain: PRIMARY\n    policy:\n      username_pattern: '[a-'\n",
            "4:7: userstores[0].policy.username_pattern",
            "not a valid regular expression",
        ),
        (
            "userstores:\n  - policy:\n      required_claims: [shoe_size]\n",
            "3:7: userstores[0].policy.required_claims",
            "'shoe_size' is not a known claim",
        ),
        (
            "identity_providers:\n  - name: a\n    connector: scim2\n    deprovision: erase\n",
            "4:5: identity_providers[0].deprovision",
            "one of 'delete', 'disable'",
        ),
    ],
)
def test_semantic_errors_are_located(text, where, says):
    message = error_of(text).message
    assert message.startswith(f"idprov.yaml:{where}: "), message
    assert says in message


def test_application_naming_an_unknown_identity_provider():
    message = error_of(
        "identity_providers:\n  - name: corp\n    connector: scim2\n"
        "applications:\n  - name: resident\n  - name: hr\n    identity_providers: [nope]\n"
    ).message
    assert message.startswith("idprov.yaml:7:5: applications[1].identity_providers: ")
    assert "unknown identity provider 'nope' (declared: corp)" in message


def test_unsafe_yaml_tags_are_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f"description: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(ConfigError):
        load_text(f"userstores:\n  - {text}", "x.yaml")
    assert not marker.exists()


def test_not_utf8(tmp_path):
    path = tmp_path / "idprov.yaml"
    path.write_bytes(b"version: 1\ndescription: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert "not UTF-8" in info.value.message
    assert str(path) in info.value.message


# ---- discovery


@pytest.fixture
def four_configs(tmp_path, config_dir, monkeypatch):
    """A config at each place discovery looks; each names its own data_dir."""
    paths = {}
    for name, path in [
        ("explicit", tmp_path / "elsewhere" / "explicit.yaml"),
        ("env", tmp_path / "env" / "from-env.yaml"),
        ("cwd", tmp_path / "idprov.yaml"),
        ("user", config_dir / "idprov.yaml"),
    ]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"data_dir: data-{name}\n")
        paths[name] = path
    monkeypatch.setenv("IDPROV_CONFIG", str(paths["env"]))
    return paths


def test_discovery_order(four_configs, monkeypatch):
    paths = four_configs
    assert discover(str(paths["explicit"])) == paths["explicit"]
    assert discover() == paths["env"]
    monkeypatch.delenv("IDPROV_CONFIG")
    assert discover() == Path.cwd() / "idprov.yaml"
    paths["cwd"].unlink()
    assert discover() == paths["user"]
    paths["user"].unlink()
    assert discover() is None
    config = load_config()
    assert config.source == "<embedded default>"


def test_default_data_dir_follows_xdg_and_idprov_data_dir(tmp_path, monkeypatch):
    assert load_config().data_dir == str(tmp_path / "xdg-data" / "idprov")
    monkeypatch.setenv("IDPROV_DATA_DIR", str(tmp_path / "custom"))
    assert load_config().data_dir == str(tmp_path / "custom")
    (tmp_path / "idprov.yaml").write_text("version: 1\n")
    assert load_config().data_dir == str(tmp_path / "custom")


def test_missing_explicit_or_env_config_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as info:
        discover(str(tmp_path / "nope.yaml"))
    assert "does not exist" in info.value.message
    monkeypatch.setenv("IDPROV_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError) as info:
        discover()
    assert "IDPROV_CONFIG" in info.value.message
    monkeypatch.setenv("IDPROV_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError):
        discover()


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    conf = tmp_path / "etc" / "idprov.yaml"
    conf.parent.mkdir()
    conf.write_text(
        "data_dir: state\n"
        "userstores:\n  - domain: PRIMARY\n"
        "  - domain: LOCAL\n    type: sqlite\n    path: stores/local.db\n"
        "  - domain: ABS\n    type: sqlite\n    path: /srv/abs.db\n"
        "  - domain: HOME\n    type: sqlite\n    path: ~/home.db\n"
    )
    config = load_file(conf)
    assert config.data_dir == str(tmp_path / "etc" / "state")
    paths = {u.domain: getattr(u, "path", None) for u in config.userstores}
    assert paths == {
        "PRIMARY": None,
        "LOCAL": str(tmp_path / "etc" / "stores" / "local.db"),
        "ABS": "/srv/abs.db",
        "HOME": str(Path(os.environ["HOME"]) / "home.db"),
    }


def test_config_lookup_helpers():
    config = load_text("userstores:\n  - domain: PRIMARY\n  - domain: Contractors\n", "x.yaml")
    assert config.userstore("CONTRACTORS").domain == "Contractors"
    with pytest.raises(NotFoundError) as info:
        config.userstore("nope")
    assert "Contractors" in info.value.hint
    with pytest.raises(NotFoundError) as info:
        config.application("nope")
    assert "resident" in info.value.hint


def test_config_objects_compare_by_content():
    a = load_text("claims:\n  - name: badge_id\n", "a.yaml")
    b = load_text("claims:\n  - name: badge_id\n", "b.yaml")
    assert a == b
    assert dataclasses.replace(a, claims=[]) != b
    assert Config() != a


# ---- secrets


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A configuration block holding a secret, as connector options will."""

    token: SecretRef


def build_credentials(text: str) -> Credentials:
    data, locator = parse_yaml(text, "creds.yaml")
    return build(Credentials, data, locator)


@pytest.mark.parametrize(
    "ref", ["env:SCIM_TOKEN", "file:/run/secrets/token", "keyring:idprov/scim", "keyring:scim"]
)
def test_secret_references_are_accepted(ref):
    creds = build_credentials(f"token: '{ref}'\n")
    assert creds.token == SecretRef(ref)
    assert str(creds.token) == ref


@pytest.mark.parametrize("value", ["hunter2-literal", "vault:x/y", "env:", "Bearer abc:def", "42"])
def test_literal_secrets_are_refused(value):
    with pytest.raises(ConfigError) as info:
        build_credentials(f"token: '{value}'\n")
    message = info.value.message
    assert message.startswith("creds.yaml:1:1: token: ")
    assert "env:NAME" in message and "file:PATH" in message and "keyring:" in message
    assert value not in message.replace("env:NAME", "")


def test_env_secret(monkeypatch):
    monkeypatch.setenv("IDPROV_TEST_TOKEN", "tok-3141")
    ref = SecretRef("env:IDPROV_TEST_TOKEN")
    assert ref.reveal() == "tok-3141"
    assert ref.status() == "set"
    assert "tok-3141" not in repr(ref) + str(ref)
    monkeypatch.setenv("IDPROV_TEST_TOKEN", "")
    assert ref.status() == "missing"
    monkeypatch.delenv("IDPROV_TEST_TOKEN")
    with pytest.raises(SecretError) as info:
        ref.reveal()
    assert "IDPROV_TEST_TOKEN" in info.value.message
    assert "export IDPROV_TEST_TOKEN" in info.value.hint


def test_file_secret(tmp_path):
    path = tmp_path / "token"
    path.write_text("first-line-secret\nsecond line\n")
    assert SecretRef(f"file:{path}").reveal() == "first-line-secret"
    path.write_text("no-newline")
    assert SecretRef(f"file:{path}").reveal() == "no-newline"
    path.write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        SecretRef(f"file:{path}").reveal()
    with pytest.raises(SecretError) as info:
        SecretRef(f"file:{tmp_path / 'missing'}").reveal()
    assert "cannot be read" in info.value.message
    assert SecretRef(f"file:{tmp_path / 'missing'}").status() == "missing"


def test_keyring_secret_round_trip(keyring_backend):
    backend = keyring_backend("memory")
    assert set_keyring_secret("scim-token", "kr-2718") == "keyring:idprov/scim-token"
    assert backend.items == {("idprov", "scim-token"): "kr-2718"}
    assert SecretRef("keyring:idprov/scim-token").reveal() == "kr-2718"
    assert SecretRef("keyring:scim-token").reveal() == "kr-2718"
    assert get_keyring_secret("scim-token") == "kr-2718"
    with pytest.raises(SecretError) as info:
        SecretRef("keyring:other/scim-token").reveal()
    assert "idprov secret set scim-token" in info.value.hint


@pytest.mark.parametrize("backend", ["fail", "null"])
def test_keyring_without_a_usable_backend_points_to_env_and_file(keyring_backend, backend):
    keyring_backend(backend)
    for attempt in (
        lambda: SecretRef("keyring:idprov/x").reveal(),
        lambda: set_keyring_secret("x", "value"),
    ):
        with pytest.raises(SecretError) as info:
            attempt()
        assert "no usable keyring backend" in info.value.message
        assert "env:NAME" in info.value.hint and "file:PATH" in info.value.hint
    assert SecretRef("keyring:idprov/x").status() == "missing"


# ---- names, types and YAML that used to pass or crash


@pytest.mark.parametrize(
    "name", ["username", "password", "password_hash", "roles", "line", "error"]
)
def test_claims_may_not_take_the_names_of_csv_columns(name):
    error = error_of(f"claims:\n  - name: badge\n  - name: {name}\n")
    assert error.message.startswith(f"idprov.yaml:3:5: claims[1].name: {name!r} cannot be a ")
    assert "column" in error.message and "give the claim another name" in error.message


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("version: true\n", "1:1: version", "expected one of 1, got bool True"),
        ("data_dir: 5\n", "1:1: data_dir", "expected a string, got int 5; put it in quotes"),
        (
            "userstores:\n  - domain: PRIMARY\n    description: 42\n",
            "3:5: userstores[0].description",
            "expected a string, got int 42",
        ),
    ],
)
def test_values_of_another_type_are_not_converted(text, where, says):
    message = error_of(text).message
    assert message.startswith(f"idprov.yaml:{where}: "), message
    assert says in message


def test_a_quoted_number_is_text():
    assert load_text("data_dir: '5'\n", "x.yaml", base_dir=Path("/etc")).data_dir == "/etc/5"


def test_an_alias_inside_the_node_it_names_is_located():
    error = error_of("version: 1\nx: &a [1, *a]\n")
    assert error.message.startswith(
        "idprov.yaml:2:4: x[1]: this alias repeats the list or mapping that contains it "
        "(anchored at line 2, column 4)"
    )
    assert "*name" in error.hint
    error = error_of("a: &m\n  b: *m\n")
    assert error.message.startswith("idprov.yaml:2:3: a.b: this alias repeats")


def laughs(levels: int) -> str:
    """Ten aliases of the level below at each level: 10**(levels + 1) values."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_aliases_that_expand_past_the_limit_are_refused(monkeypatch):
    from idprov.config import loader

    monkeypatch.setattr(loader, "MAX_VALUES", 1000)  # 10,000 values below: never large
    error = error_of(laughs(3))
    assert error.message.startswith("idprov.yaml:"), error.message
    assert ": a2[" in error.message
    assert "more than 1,000 values once its aliases are expanded" in error.message
    assert "fewer levels of aliases" in error.hint


def test_a_long_text_repeated_by_aliases_is_refused(monkeypatch):
    """A few values, each a long string repeated by an alias: the value count stays
    small while the text grows (120 KB made `config show` print 500 MB)."""
    from idprov.config import loader

    monkeypatch.setattr(loader, "MAX_TEXT", 10_000)
    long = "x" * 1_000
    text = f"a: &long {long}\nb: [{', '.join(['*long'] * 20)}]\n"
    error = error_of(text)
    assert "more than 10,000 characters of text once its aliases are expanded" in error.message


def test_a_merge_key_is_named_as_such():
    error = error_of("base: &b {x: 1}\nother:\n  <<: *b\n  y: 2\n")
    assert error.message.startswith("idprov.yaml:3:")
    assert "a merge key (<<) is not supported" in error.message


def test_aliases_within_the_limit_still_work():
    config = load_text(
        "identity_providers:\n"
        "  - {name: a, connector: scim2, retry: &retry {max_attempts: 2}}\n"
        "  - {name: b, connector: scim2, retry: *retry}\n",
        "x.yaml",
    )
    assert [i.retry.max_attempts for i in config.identity_providers] == [2, 2]


def test_nesting_is_bounded():
    error = error_of("a: " + "[" * 80 + "]" * 80 + "\n")
    assert error.message.startswith("idprov.yaml:1:")
    assert "nested more than" in error.message


def test_a_key_must_be_text():
    assert "a key must be text" in error_of("? [a]\n: 1\n").message


@pytest.mark.parametrize(
    ("text", "where", "says", "hint"),
    [
        ("version: 1\nuserstores:\n\t- domain: PRIMARY\n", "3:1", "a tab character", "spaces"),
        ("version: 1\n---\nversion: 1\n", "2:1", "a second YAML document", "`---`"),
    ],
)
def test_yaml_errors_name_their_cause(text, where, says, hint):
    error = error_of(text)
    assert error.message.startswith(f"idprov.yaml:{where}: invalid YAML: {says}"), error.message
    assert hint in error.hint


def test_a_directory_named_as_the_config(tmp_path, monkeypatch):
    (tmp_path / "conf.yaml").mkdir()
    with pytest.raises(ConfigError) as info:
        discover(str(tmp_path / "conf.yaml"))
    assert "is a directory" in info.value.message
    assert str(tmp_path / "conf.yaml" / "idprov.yaml") in info.value.hint
    monkeypatch.setenv("IDPROV_CONFIG", str(tmp_path / "conf.yaml"))
    with pytest.raises(ConfigError) as info:
        discover()
    assert (
        info.value.message
        == f"IDPROV_CONFIG points to {tmp_path / 'conf.yaml'}, which is a directory"
    )


SALESFORCE = """identity_providers:
  - name: sf
    connector: salesforce
    options:
      client_id: app
      roles:
        Staff: {type: permission_set, name: Sales_Ops}
    provisioning_roles: [staff, auditors]
"""


def test_a_salesforce_provisioning_role_with_no_permission_set_or_group_is_located():
    message = error_of(SALESFORCE).message
    assert message.startswith("idprov.yaml:8:33: identity_providers[0].provisioning_roles[1]: ")
    assert "'auditors' is pushed to Salesforce" in message
    assert "add `auditors: {type: permission_set, name: API_NAME}`" in message
    assert "push_roles: none" in message


@pytest.mark.parametrize(
    "change",
    [
        ("[staff, auditors]", "[STAFF]"),  # mapped, whatever the case
        ("    provisioning_roles", "    push_roles: none\n    provisioning_roles"),
    ],
)
def test_salesforce_roles_that_are_mapped_or_not_pushed_load(change):
    load_text(SALESFORCE.replace(*change), "idprov.yaml")
