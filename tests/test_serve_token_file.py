"""`idprov serve` reads a ``file:`` inbound_token again when its file changes: a
rotated token works at the next request and the old one gets 401, with no restart
(the old one kept working, the new one got 401, until a restart)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from idprov.config import load_text
from tests.test_serve_scim import Inbound, running


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Inbound, Path]]:
    token_file = tmp_path / "crm.token"
    token_file.write_text("first-token-0001\n")
    token_file.chmod(0o600)
    config = load_text(
        f"""
version: 1
data_dir: {tmp_path / "data"}
applications:
  - name: crm
    inbound_token: file:{token_file}
""",
        "serve-file-token.yaml",
    )
    with running(config) as inbound:
        yield inbound, token_file


def status(inbound: Inbound, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{inbound.url}/Users", headers=headers, timeout=30).status_code


def test_a_token_rewritten_in_place_takes_effect_at_once(served):
    inbound, token_file = served
    assert status(inbound, "first-token-0001") == 200
    token_file.write_text("second-token-00002\n")
    assert status(inbound, "second-token-00002") == 200
    assert status(inbound, "first-token-0001") == 401


def test_a_token_file_replaced_by_a_rename_takes_effect_at_once(served):
    inbound, token_file = served
    fresh = token_file.with_name("crm.token.new")
    fresh.write_text("renamed-token-01\n")  # the same length: the new inode tells
    os.replace(fresh, token_file)
    assert status(inbound, "renamed-token-01") == 200
    assert status(inbound, "first-token-0001") == 401


def test_an_unreadable_token_file_keeps_the_tokens_in_use(served, caplog):
    inbound, token_file = served
    token_file.write_text("")  # half written, say
    with caplog.at_level(logging.WARNING, logger="idprov.serve"):
        assert status(inbound, "first-token-0001") == 200
    assert "previous ones stay in use" in caplog.text and "is empty" in caplog.text
    assert "first-token-0001" not in caplog.text
    token_file.write_text("third-token-000003\n")
    assert status(inbound, "third-token-000003") == 200
    assert status(inbound, "first-token-0001") == 401


def test_a_token_file_that_is_not_utf8_keeps_the_tokens_in_use(served, caplog):
    inbound, token_file = served
    token_file.write_bytes(b"new-token-\xe2\x82")  # cut inside a character
    with caplog.at_level(logging.WARNING, logger="idprov.serve"):
        assert status(inbound, "first-token-0001") == 200
    assert f"secret file:{token_file} is not UTF-8 text" in caplog.text
    assert "previous ones stay in use" in caplog.text
    assert "new-token" not in caplog.text and "first-token-0001" not in caplog.text
    assert status(inbound, "first-token-0001") == 200  # still, not a 500 then the old one
    token_file.write_text("fourth-token-00004\n")
    assert status(inbound, "fourth-token-00004") == 200
    assert status(inbound, "first-token-0001") == 401


def test_serve_refuses_to_start_with_a_token_file_that_is_not_utf8(cli, tmp_path, write_config):
    token_file = tmp_path / "crm.token"
    token_file.write_bytes(b"new-token-\xe2\x82")
    write_config(
        f"version: 1\ndata_dir: {tmp_path / 'data'}\napplications:\n"
        f"  - name: crm\n    inbound_token: file:{token_file}\n"
    )
    error = cli("--config", "idprov.yaml", "serve", "--json").error(2)
    assert error["message"] == f"secret file:{token_file} is not UTF-8 text"
    assert "UTF-8" in error["hint"] and "new-token" not in str(error)
