"""scim2-server's own storage contract (``ScimStorageContract`` from
``scim2_server.testing``) run against idprov's storage: the core service, SQLite, the
unit of work, with idprov's published schemas as the provider. What the contract
asks of cursors does not apply (idprov's storage pages by index, as its
ServiceProviderConfig says), so those tests are not collected rather than skipped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scim2_models import ScimProvider
from scim2_server.testing import ScimStorageContract

from idprov.config import load_text
from idprov.inbound.scim.acting import Backend, acting
from idprov.inbound.scim.schema import build_provider
from idprov.inbound.scim.storage import IdprovStorage
from idprov.provisioning.external_ids import ExternalIds
from idprov.provisioning.service import IdentityService


class TestIdprovStorage(ScimStorageContract):
    @pytest.fixture
    def provider(self) -> ScimProvider:
        return build_provider(1_048_576)

    @pytest.fixture
    def storage(self, provider: ScimProvider, tmp_path: Path) -> Iterator[Any]:
        config = load_text(f"version: 1\ndata_dir: {tmp_path / 'data'}\n", "contract.yaml")
        with IdentityService(config, actor="scim") as service:
            backend = Backend(service, ExternalIds(service.state.db), "resident", "PRIMARY")
            with acting(backend):
                yield IdprovStorage(provider)


for _name in [n for n in dir(ScimStorageContract) if n.startswith("test_cursor_")]:
    setattr(TestIdprovStorage, _name, None)
