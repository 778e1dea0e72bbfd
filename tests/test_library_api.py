"""The library API: a program provisions with `from idprov import open_service`."""

from __future__ import annotations

import json

import pytest

import idprov
from idprov import IdentityService, IdprovError, Role, User, load_config, open_service
from idprov.errors import ConflictError, ExitCode, NotFoundError, PolicyError, UsageError
from idprov.model import UserQuery
from idprov.provisioning.state import AuditQuery


def test_public_names():
    assert set(idprov.__all__) >= {"open_service", "IdentityService", "IdprovError", "User"}
    for name in idprov.__all__:
        assert getattr(idprov, name) is not None
    with pytest.raises(AttributeError):
        idprov.no_such_name  # noqa: B018


def test_users_and_roles_through_the_service(data_dir):
    with open_service() as svc:
        assert svc.add_role("staff").target == "staff"
        result = svc.add_user(
            "alice", {"email": "alice@example.com"}, password="pw-123456", roles=["staff"]
        )
        assert (result.action, result.changed) == ("user.add", True)
        user = svc.get_user("ALICE")
        assert isinstance(user, User)
        assert (user.username, user.roles, user.has_password) == ("alice", ["staff"], True)
        assert svc.verify_password("alice", "pw-123456")
        svc.update_user("alice", {"title": "Lead"}, unset=["email"])
        assert svc.get_user("alice").claims == {"title": "Lead"}
        svc.add_user("bob")
        assert not svc.verify_password("bob", "")
        svc.assign("staff", ["bob"])
        role = svc.get_role("staff")
        assert isinstance(role, Role)
        assert role.members == ["alice", "bob"]
        page = svc.list_users(UserQuery(role="staff", limit=1))
        assert ([u.username for u in page.items], page.total) == (["alice"], 2)
        svc.rename_role("staff", "people")
        svc.unassign("people", ["alice"])
        svc.delete_user("bob")
        assert [r.member_count for r in svc.list_roles()] == [0]
        svc.delete_role("people")
        json.dumps(result.to_dict())
    assert (data_dir / "idprov.db").is_file()


def test_the_cli_sees_what_the_library_wrote(cli):
    with open_service(actor="hr-bot") as svc:
        svc.add_user("alice", {"given_name": "Alice"})
    assert cli("user", "show", "alice", "--json").json()["claims"] == {"given_name": "Alice"}
    (entry,) = cli("log", "--json").items()
    assert (entry["actor"], entry["application"], entry["action"]) == (
        "hr-bot",
        "resident",
        "user.add",
    )


def test_service_over_an_explicit_config(tmp_path, write_config):
    path = write_config("data_dir: state\napplications:\n  - name: hr-feed\n", "conf/hr.yaml")
    service = IdentityService(load_config(path), application="hr-feed", actor="hr-bot")
    with service:
        service.add_user("alice")
        (entry,) = service.audit_log(AuditQuery())
        assert (entry.actor, entry.application, entry.target) == ("hr-bot", "hr-feed", "alice")
    assert (tmp_path / "conf" / "state" / "idprov.db").is_file()


@pytest.mark.parametrize(
    ("call", "error", "exit_code"),
    [
        (lambda s: s.get_user("nobody"), NotFoundError, ExitCode.NOT_FOUND),
        (lambda s: s.add_user("alice"), ConflictError, ExitCode.CONFLICT),
        (lambda s: s.add_user("a b"), PolicyError, ExitCode.POLICY),
        (lambda s: s.add_user("carol", {"shoe_size": "42"}), UsageError, ExitCode.USAGE),
        (lambda s: s.set_password("alice", "x"), PolicyError, ExitCode.POLICY),
        (lambda s: s.assign("nope", ["alice"]), NotFoundError, ExitCode.NOT_FOUND),
        (lambda s: s.add_user("bad\x00name"), PolicyError, ExitCode.POLICY),
        (lambda s: s.add_user("carol", {"title": "a\x00b"}), PolicyError, ExitCode.POLICY),
    ],
)
def test_errors_carry_an_exit_code_and_a_hint(call, error, exit_code):
    with open_service() as svc:
        svc.add_user("alice")
        with pytest.raises(error) as info:
            call(svc)
        assert isinstance(info.value, IdprovError)
        assert info.value.exit_code == exit_code
        assert info.value.to_dict()["message"] == info.value.message
        assert svc.list_users(UserQuery()).total == 1


def test_library_use_loads_neither_typer_nor_rich(run_python):
    code = """
import sys
from idprov import open_service
from idprov.model import UserQuery
with open_service(actor="batch") as svc:
    svc.add_role("staff")
    svc.add_user("alice", {"email": "a@example.com"}, password="pw-123456", roles=["staff"])
    assert svc.verify_password("alice", "pw-123456")
    assert svc.list_users(UserQuery()).total == 1
    try:
        svc.get_user("nobody")
    except Exception as exc:
        print(type(exc).__name__)
print(sorted({m.split(".")[0] for m in sys.modules} & {"typer", "rich", "idprov"}))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["NotFoundError", "['idprov']"]


def test_import_idprov_is_cheap(run_python):
    proc = run_python(
        "import sys, idprov; print(idprov.__version__); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlite_utils', 'yaml', 'typer', 'rich', 'httpx', 'keyring') "
        "or m.startswith('idprov.')))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [idprov.__version__, "[]"]
