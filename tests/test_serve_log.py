"""`idprov serve`'s access log holds one line per request, whatever the client puts in
the path: a decoded ``%0a`` or ``%0d`` cannot forge a line, ``%00`` and ``%1b[``
never reach the file (or a terminal that shows it) raw, ``%20`` cannot forge a field."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_serve_scim import CRM_TOKEN, HR_TOKEN, Inbound, running, serve_config


@pytest.fixture
def inbound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbound]:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    monkeypatch.setenv("HR_TOKEN", HR_TOKEN)
    with running(serve_config(tmp_path)) as served:
        yield served


@pytest.mark.parametrize(
    ("sent", "logged"),
    [
        ("/nothing%0aFORGED%20200%201.0ms", "/nothing\\nFORGED\\x20200\\x201.0ms"),
        ("/a%0d%0ab", "/a\\r\\nb"),
        ("/nul%00here", "/nul\\x00here"),
        ("/red%1b[31mtext%1b[0m", "/red\\x1b[31mtext\\x1b[0m"),
        ("/back%5cslash%e2%80%a8", "/back\\\\slash\\u2028"),
        (  # invisible, as the CLI's views escape them: zero-width, marks, BOM, tags
            "/zw%e2%80%8bx%e2%80%8ey%e2%80%8fz%ef%bb%bf%f3%a0%81%81",
            "/zw\\u200bx\\u200ey\\u200fz\\ufeff\\U000e0041",
        ),
    ],
)
def test_a_hostile_path_is_one_escaped_line(inbound, sent, logged):
    answer = httpx.get(f"{inbound.url}{sent}", timeout=30)  # no token: 401
    assert answer.status_code == 401
    authorized = inbound.client.get(f"/Users{sent}")
    assert authorized.status_code in (400, 404), authorized.text
    lines = inbound.log.getvalue().splitlines()
    assert len(lines) == 2, lines
    for line in lines:
        assert not re.search(r"[\x00-\x1f\x7f\u2028]", line), line
        assert len(line.split(" ")) == 9, line  # time client method path status ms app token out
    assert f" GET /v2{logged} 401 " in lines[0]
    assert f" GET /v2/Users{logged} " in lines[1] and "app=crm" in lines[1]


def test_an_ordinary_line_is_unchanged(inbound):
    inbound.client.get("/Users")
    [line] = inbound.log.getvalue().splitlines()
    assert re.fullmatch(
        r"\S+Z 127\.0\.0\.1 GET /v2/Users 200 [\d.]+ms app=crm token=config outbound=-", line
    ), line
