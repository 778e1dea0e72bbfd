"""`idprov serve`: a ``userName`` filter compares the names as GET returns them (RFC
7644 3.4.2.2): bare in the application's userstore, ``DOMAIN/name`` in its others.
``eq "PARTNERS/x"`` found the user, but ``sw "PARTNERS/"`` and ``co "/"`` found none:
the stores were asked about the name with its prefix, which no bare name has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve_scim import (
    CRM_SEES_PARTNERS,
    CRM_TOKEN,
    HR_TOKEN,
    Inbound,
    new_user,
    running,
    serve_config,
)

NAMES = [
    "xdom@contoso.com",
    "alice",
    "partial",
    "PARTNERS/xdom@contoso.com",
    "PARTNERS/pat",
]
"""What crm sends, and reads back: crm's JIT logins land in PARTNERS (see
:data:`~tests.test_serve_scim.CRM_SEES_PARTNERS`), so it sees both userstores."""


@pytest.fixture
def crm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path, crm_extra=CRM_SEES_PARTNERS)) as served:
        for name in NAMES:
            new_user(served.client, name, title="staff")
        yield served


def expected(op: str, value: str, names: list[str]) -> list[str]:
    """What the filter says of the names GET returns (userName is not case exact)."""
    test = {
        "eq": lambda n: n == value.casefold(),
        "sw": lambda n: n.startswith(value.casefold()),
        "ew": lambda n: n.endswith(value.casefold()),
        "co": lambda n: value.casefold() in n,
    }[op]
    return sorted(n for n in names if test(n.casefold()))


def found(served: Inbound, scim_filter: str) -> list[str]:
    response = served.client.get("/Users", params={"filter": scim_filter})
    assert response.status_code == 200, response.text
    return sorted(r["userName"] for r in response.json().get("Resources", []))


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("eq", "PARTNERS/xdom@contoso.com"),
        ("eq", "partners/PAT"),
        ("eq", "xdom@contoso.com"),
        ("ew", "xdom@contoso.com"),
        ("ew", "S/pat"),
        ("sw", "PARTNERS/"),
        ("sw", "PARTNERS/xdom"),
        ("sw", "part"),
        ("co", "PARTNERS/"),
        ("co", "/"),
        ("co", "NERS/x"),
        ("co", "a/b"),
        ("co", "tner"),
        ("co", "xdom"),
    ],
)
def test_username_filters_match_the_names_get_returns(crm, op: str, value: str) -> None:
    shown = found(crm, "userName pr")
    assert shown == sorted(NAMES)
    want = expected(op, value, shown)
    assert found(crm, f'userName {op} "{value}"') == want
    # in an "or" with a term that matches nothing, the same users (the store is asked)
    assert found(crm, f'userName {op} "{value}" or title eq "nobody"') == want
    assert found(crm, f'title eq "staff" and userName {op} "{value}"') == want


def test_another_applications_prefix_finds_nothing(crm: Any) -> None:
    """hr sees PARTNERS only, where names are bare."""
    hr = crm.as_token(HR_TOKEN)
    response = hr.get("/Users", params={"filter": 'userName sw "pa"'})
    assert sorted(r["userName"] for r in response.json()["Resources"]) == ["pat"]
    response = hr.get("/Users", params={"filter": 'userName sw "PARTNERS/"'})
    assert response.json()["totalResults"] == 0
