"""A token HTTP cannot carry (a character beyond ASCII, pasted with it) is a
configuration error naming the option and its reference, never the value: it was
`internal error: UnicodeEncodeError`."""

from __future__ import annotations


def test_idp_test_with_a_non_ascii_token_names_the_option_and_the_reference(
    cli, write_config, monkeypatch
):
    monkeypatch.setenv("SCIM_TOKEN", "TOKSECRÉT777")
    write_config(
        """identity_providers:
  - name: target
    connector: scim2
    options:
      base_url: http://127.0.0.1:9/v2
      auth: bearer
      token: env:SCIM_TOKEN
applications:
  - name: resident
    identity_providers: [target]
"""
    )
    said = cli("idp", "test", "target").fails(2)
    assert "options.token names (env:SCIM_TOKEN)" in said
    assert "not ASCII (character 8 of 12): HTTP headers carry ASCII only" in said
    assert "TOKSECR" not in said
    error = cli("idp", "test", "target", "--json").error(2)
    assert error["code"] == "secret"
    assert "env:SCIM_TOKEN" in error["message"] and "TOKSECR" not in str(error)
