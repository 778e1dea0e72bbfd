"""Errors a newcomer met in the trial, in the words that say what to do."""

from __future__ import annotations

import pytest


def test_a_short_password_is_told_its_length_not_the_pattern(cli):
    error = cli("user", "add", "alice", "--password-stdin", "--json", input="shrt\n").error(5)
    assert error["message"] == (
        "the password is too short: the PRIMARY userstore's password pattern asks for "
        "at least 8 characters (at most 256, no control characters)"
    )
    assert "x00" not in error["message"] and "shrt" not in str(error)


def test_a_confirmation_with_no_terminal_and_no_answer_says_to_pass_yes(cli, state):
    cli("user", "add", "erin").ok()
    cli("role", "add", "tmp").ok()
    before = state.dump()
    for args in (["user", "delete", "erin"], ["role", "delete", "tmp"]):
        stderr = cli(*args, input="").fails(1)
        assert "error: cannot ask for confirmation (stdin is not a terminal): pass --yes" in stderr
        assert "nothing was changed" in stderr
    assert state.dump() == before
    cli("user", "delete", "erin", "--yes").ok()


def test_a_piped_answer_still_counts(cli):
    cli("user", "add", "erin").ok()
    assert "aborted" in cli("user", "delete", "erin", input="n\n").fails(1)
    cli("user", "delete", "erin", input="y\n").ok()


def test_a_file_secret_whose_file_is_missing_says_so(tmp_path):
    from idprov.config.secrets import SecretError, SecretRef

    missing = tmp_path / "nonexistent" / "tok"
    with pytest.raises(SecretError) as info:
        SecretRef(f"file:{missing}").reveal()
    assert info.value.message == (
        f"secret file:{missing} cannot be read: file {missing} does not exist"
    )
    assert info.value.hint is not None and "correct the path" in info.value.hint


MISPLACED = """\
userstores:
  - domain: PRIMARY
    policy:
      preset: default
{claims}
identity_providers:
  - name: scim-main
    connector: scim2
    options:
      base_url: http://127.0.0.1:8765/v2
      token: env:SCIM_TOKEN
{roles}
applications:
  - name: resident
    identity_providers: [scim-main]
"""
CLAIMS_IN, CLAIMS_OUT = "      required_claims: [email]", "    required_claims: [email]"
ROLES_IN, ROLES_OUT = "    provisioning_roles: [staff]", "      provisioning_roles: [staff]"


@pytest.mark.parametrize(
    ("claims", "roles", "says"),
    [
        (
            CLAIMS_OUT,
            ROLES_IN,
            "5:5: userstores[0].required_claims: unknown key 'required_claims': "
            "required_claims belongs to userstores[0].policy: indent it more, under policy:",
        ),
        (
            CLAIMS_IN,
            ROLES_OUT,
            "12:7: identity_providers[0].options.provisioning_roles: unknown key "
            "'provisioning_roles': provisioning_roles belongs to identity_providers[0], not "
            "to its options: indent it less",
        ),
    ],
)
def test_a_key_one_level_off_is_told_where_it_belongs(cli, write_config, claims, roles, says):
    path = write_config(MISPLACED.format(claims=claims, roles=roles))
    assert cli("config", "validate").fails(2) == f"error: {path}:{says}\n"


def test_a_mistyped_config_key_gets_a_did_you_mean(cli, write_config):
    write_config("userstores:\n  - domain: PRIMARY\n    polcy: {}\n")
    message = cli("config", "validate", "--json").error(2)["message"]
    assert message.endswith(
        "unknown key 'polcy' (known keys here: description, domain, path, policy, "
        "read_only, type); did you mean 'policy'?"
    )


def test_user_list_marks_disabled_users(cli):
    cli("user", "add", "alice").ok()
    cli("user", "add", "erin", "-c", "active=false").ok()
    header, *rows = cli("user", "list").ok().stdout.splitlines()
    assert header.split("\t")[-1] == "state"
    assert {row.split("\t")[0]: row.split("\t")[-1] for row in rows} == {
        "alice": "active",
        "erin": "disabled",
    }
