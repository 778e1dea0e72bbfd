"""Test kits shipped with idprov, for the authors of plugins.

:mod:`idprov.testing.contract` holds the connector contract: a pytest class that a
third-party connector's test suite subclasses, with an adapter for its own target,
to run the same life cycle, conflict, deprovisioning, role, lost-reply and
throttling checks that idprov's five built-in connectors pass. It needs pytest,
which idprov itself does not; import it from tests only.
"""

from idprov.testing.contract import ConnectorContract, ContractTarget

__all__ = ["ConnectorContract", "ContractTarget"]
