"""Other ways in: CSV import, the SCIM 2.0 server, JIT login. Each calls the core."""
