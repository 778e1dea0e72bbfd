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
    ClaimDefinition("active", "Account enabled: true or false", pattern=r"^(true|false)$"),
    ClaimDefinition("emails", "Further e-mail addresses", multi_valued=True),
)
