"""The core: applying changes to userstores, the audit log, and outbound provisioning."""
