"""What the one chokepoint blanks: any connector's TargetError (a third party's too,
with no HTTP in sight) loses the secrets idprov resolved and the passwords it carries;
short ones where they stand as a value, never every word or letters that match."""

from __future__ import annotations

import gc

import pytest

from idprov.config.secrets import SecretRef
from idprov.connectors.base import Account, TargetError


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
    ],
)
def test_a_password_of_two_characters_is_blanked_only_where_it_stands_as_a_value(said, shown):
    account = Account("u3", "al", {}, password="ab")
    assert TargetError(said).message == shown
    del account


def test_a_secret_of_five_characters_is_blanked_as_a_value_not_as_a_word():
    account = Account("u4", "fay", {}, password="k3Yq9")
    said = "{'X-Api-Key': 'k3Yq9'} X-Api-Key: k3Yq9\nkey k3Yq9 xk3Yq9y"
    shown = "{'X-Api-Key': '***'} X-Api-Key: ***\nkey k3Yq9 xk3Yq9y"
    assert TargetError(said).message == shown
    del account
