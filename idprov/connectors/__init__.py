"""Outbound connectors: one module per target protocol behind one small contract."""
