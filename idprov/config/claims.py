"""idprov's claim dialect: the user attributes every userstore and connector speaks.

A claim is a named user attribute (``email``, ``given_name``...). The common ones are
known out of the box; a configuration declares more under ``claims:``. Each
userstore maps claims to its own attribute names; each connector maps them to the
target's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClaimDefinition:
    """A claim idprov knows: its name, what it means, and the rules for its values."""

    name: str
    description: str = ""
    required: bool = False
    pattern: str | None = None
    multi_valued: bool = False
    max_length: int = 1024
    multiline: bool = False
    """Whether values may hold line breaks and tabs (a postal address)."""


BUILTIN_CLAIMS: tuple[ClaimDefinition, ...] = (
    ClaimDefinition("email", "Primary e-mail address", pattern=r"^[^@\s]+@[^@\s]+$"),
    ClaimDefinition("home_email", "Home e-mail address", pattern=r"^[^@\s]+@[^@\s]+$"),
    ClaimDefinition("given_name", "First name"),
    ClaimDefinition("family_name", "Last name"),
    ClaimDefinition("middle_name", "Middle name"),
    ClaimDefinition("display_name", "Name shown to people"),
    ClaimDefinition("nickname", "Casual name"),
    ClaimDefinition("phone_number", "Work telephone number"),
    ClaimDefinition("mobile", "Mobile telephone number"),
    ClaimDefinition("title", "Job title"),
    ClaimDefinition("department", "Department"),
    ClaimDefinition("organization", "Organization or company"),
    ClaimDefinition("employee_number", "Employee number from HR"),
    ClaimDefinition("employee_type", "Employment type (employee, contractor...)"),
    ClaimDefinition("manager", "Username of the manager"),
    ClaimDefinition("cost_center", "Cost center"),
    ClaimDefinition("locale", "Preferred locale, e.g. en-GB"),
    ClaimDefinition("timezone", "Time zone, e.g. Europe/Paris"),
    ClaimDefinition("street_address", "Street address", multiline=True),
    ClaimDefinition("locality", "City"),
    ClaimDefinition("region", "State or region"),
    ClaimDefinition("postal_code", "Postal code"),
    ClaimDefinition("country", "Country"),
    ClaimDefinition(
        "active", "Account enabled: true or false (any case)", pattern=r"^(?i:true|false)$"
    ),
    ClaimDefinition("emails", "Further e-mail addresses", multi_valued=True),
)

RESERVED_CLAIM_NAMES: dict[str, str] = {
    "username": "the CSV import and `export users` read and write the user's name in "
    "a `username` column",
    "password": "the CSV import reads the password to set in a `password` column",
    "password_hash": "the CSV import reads a password hash in a `password_hash` column",
    "roles": "the CSV import and `export users` read and write the user's roles in a "
    "`roles` column",
    "line": "the rejects file of `import users --rejects` adds a `line` column",
    "error": "the rejects file of `import users --rejects` adds an `error` column",
}
"""Names no claim may have, and why: the columns of idprov's CSV files that are not
claims (the importer's ``RESERVED`` columns, the fixed columns of ``export users`` and
the two a rejects file adds). A claim named so would be read from, or written to,
the same column as the user's name, password or roles."""
