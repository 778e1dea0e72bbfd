"""scim2-tester, an independent SCIM 2.0 compliance checker, run against `idprov serve`:
discovery, CRUD on Users and Groups, PATCH add/replace/remove of every attribute the
published schemas declare (so every attribute idprov says it keeps must read back as
written), attributes/excludedAttributes, 405s on discovery writes, 404s. Every check
must report SUCCESS against the embedded default policies (no policy in the
configuration); a check that is skipped or fails is listed with its reason.

scim2-tester fills each resource it creates with random values, ``active`` true or
false too (a user created disabled must work as one created enabled). One check is
answered otherwise on purpose: the PATCH ``remove`` of ``active``, which idprov
refuses with 400 ``invalidValue`` whatever the user's state (see
tests/test_serve_patch_active.py); that refusal is asserted, not skipped."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.test_serve_scim import CRM_TOKEN, running, serve_config

scim2_tester = pytest.importorskip("scim2_tester", reason="install idprov[test]")


def test_scim2_tester_reports_success_for_every_check(
    tmp_path: Path, tokens: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx2
    from scim2_client.engines.httpx2 import SyncSCIMClient

    with running(serve_config(tmp_path)) as inbound:
        headers = {"Authorization": f"Bearer {CRM_TOKEN}"}
        with httpx2.Client(base_url=inbound.url, headers=headers, timeout=30) as http:
            results = scim2_tester.check_server(SyncSCIMClient(http))
    counts = Counter(r.status.name for r in results)
    refused = [r for r in results if _removes_active(r)]
    assert [(r.status.name, r.resource_type) for r in refused] == [("ERROR", "User")]
    assert "active cannot be removed" in refused[0].reason, refused[0].reason
    failures = [
        f"{r.status.name} {r.title} [{r.resource_type}]: {r.reason}"
        for r in results
        if r.status != scim2_tester.Status.SUCCESS and r not in refused
    ]
    assert failures == [], "\n".join(failures)
    assert counts["SUCCESS"] >= 100, counts  # 107 with scim2-tester 0.5.2
    titles = {r.title for r in results}
    assert {"check_add_attribute", "check_replace_attribute", "check_remove_attribute"} <= titles


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_serve_scim import HR_TOKEN

    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)


def _removes_active(result: Any) -> bool:
    """Whether ``result`` is scim2-tester's PATCH ``remove`` of a User's ``active``."""
    urn = str((result.data or {}).get("urn", "")) if isinstance(result.data, dict) else ""
    return result.title == "check_remove_attribute" and urn.rsplit(":", 1)[-1] == "active"
