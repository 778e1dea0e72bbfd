"""Real and spec-following SCIM peers that idprov's outbound connectors are tested against.

Each module is a pytest plugin: ``scim2`` runs the independent ``scim2-server`` (SCIM 2.0),
``scim11`` serves a strict SCIM 1.1 provider of our own in a thread.
"""
