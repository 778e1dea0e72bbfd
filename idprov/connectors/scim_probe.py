"""`idprov idp test NAME --probe`: what a SCIM 2.0 target really does.

First what it says of itself (ServiceProviderConfig, ResourceTypes, Schemas), then
what it does: on users and a group of its own, named ``idprov-probe-<random>-…``,
the probe tries filter operators, paging, ``attributes=``, Bulk, passwords, two
emails, case-insensitive userName uniqueness, PATCH forms on users and group
members, the member-change limit, and whether groups return their members. Every
object it created is deleted before it returns, also when it is interrupted.

The findings become the options (and the dialect) that fit the target.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from idprov.connectors.base import TargetError
from idprov.connectors.scim_dialects import DIALECTS, OVERRIDABLE, Dialect
from idprov.connectors.scim_wire import GROUP, PATCH_OP, USER, bulk_batches, bulk_request

if TYPE_CHECKING:
    from idprov.connectors.scim2 import Scim2Connector

PREFIX = "idprov-probe-"
FILTER_OPERATORS = ("eq", "ne", "co", "sw", "ew", "gt", "pr")
PAGE_SIZES = (1000, 500, 100, 50, 25, 10)


@dataclass
class Finding:
    """One thing checked: what, what the target did, and whether that is the RFC's."""

    check: str
    result: str
    standard: bool | None
    """True: as RFC 7644 says; False: it differs (an option follows); None: unknown."""


@dataclass
class ProbeReport:
    idp: str
    findings: list[Finding] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    """What the target does, by option name (only what the probe could tell)."""
    dialect: str = "rfc"
    options: dict[str, Any] = field(default_factory=dict)
    """The options that fit: ``dialect`` and the settings where it differs."""
    created: list[str] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)
    """Objects the probe created and could not delete (remove them by hand)."""
    interrupted: bool = False

    def add(self, check: str, result: str, standard: bool | None) -> None:
        self.findings.append(Finding(check, result, standard))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reply:
    status: int | None
    data: Any
    detail: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        if self.ok:
            return f"accepted ({self.status})"
        return f"refused ({self.status or 'no answer'}{': ' + self.detail if self.detail else ''})"


class Probe:
    """One run: the connector's HTTP, the objects made, the report."""

    def __init__(self, connector: Scim2Connector) -> None:
        self.connector = connector
        self.report = ProbeReport(connector.idp.name)
        self.prefix = f"{PREFIX}{secrets.token_hex(4)}-"
        self.users: dict[str, str] = {}
        """Probe user name -> remote id, in creation order."""
        self.groups: dict[str, str] = {}

    # ---------------------------------------------------------------- HTTP
    def send(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Reply:
        try:
            response = self.connector.http.request(
                method, path, f"probe {method} {path}", body=body, params=params
            )
        except TargetError as exc:
            if exc.status in (None, 401, 403):  # unreachable or not allowed: stop here
                raise
            return Reply(exc.status, None, _detail(exc.message))
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        return Reply(response.status_code, data, "")

    def patch(self, path: str, *operations: dict[str, Any]) -> Reply:
        return self.send("PATCH", path, {"schemas": [PATCH_OP], "Operations": list(operations)})

    def create_user(self, suffix: str, **extra: Any) -> tuple[Reply, str | None]:
        """Create ``prefix + suffix`` (a suffix in capitals gives a capitalised name)."""
        name = self.prefix.upper() + suffix if suffix.isupper() else self.prefix + suffix
        body = {"schemas": [USER], "userName": name, **extra}
        reply = self.send("POST", "/Users", body)
        remote_id = _id(reply)
        if remote_id:
            self.users[name] = remote_id
            self.report.created.append(f"user {name}")
        return reply, remote_id

    def full_user(self, suffix: str) -> dict[str, Any]:
        return {
            "displayName": f"idprov probe {suffix}",
            "name": {"givenName": "Idprov", "familyName": f"Probe {suffix}"},
            "emails": [
                {"type": "work", "value": f"{self.prefix}{suffix}@example.invalid", "primary": True}
            ],
        }

    # ---------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Delete every object made, groups first; what stays is reported."""
        for kind, made in (("Groups", self.groups), ("Users", self.users)):
            for name, remote_id in list(made.items()):
                if self._delete(f"/{kind}/{remote_id}"):
                    del made[name]
                else:
                    self.report.left_behind.append(f"{kind[:-1].lower()} {name} ({remote_id})")

    def _delete(self, path: str) -> bool:
        for _ in range(2):  # a Ctrl-C during one delete must not skip it
            try:
                reply = self.send("DELETE", path)
                return reply.ok or reply.status == 404
            except KeyboardInterrupt:
                self.report.interrupted = True
            except TargetError:
                return False
        return False


def _detail(message: str) -> str:
    """The target's own words from a TargetError message ("what: HTTP 400: detail")."""
    detail = message.split(": HTTP ", 1)[-1]
    detail = detail.split(": ", 1)[-1] if detail[:3].isdigit() else detail
    return detail if len(detail) <= 90 else detail[:87] + "..."


def _id(reply: Reply) -> str | None:
    if reply.ok and isinstance(reply.data, dict) and reply.data.get("id"):
        return str(reply.data["id"])
    return None


# -------------------------------------------------------------------- discovery
def discover(probe: Probe) -> list[str]:
    """What the target says of itself; returns the User attributes it requires."""
    report = probe.report
    config = probe.send("GET", probe.connector.config_path)
    if config.ok and isinstance(config.data, dict):
        for key in ("patch", "bulk", "filter", "changePassword", "sort", "etag"):
            value = config.data.get(key) or {}
            extra = {k: v for k, v in value.items() if k != "supported"}
            text = ("supported" if value.get("supported") else "not supported") + (
                f" {json.dumps(extra)}" if extra else ""
            )
            report.add(f"advertised: {key}", text, None)
    else:
        report.add("ServiceProviderConfig", config.describe(), False)
    types = probe.send("GET", "/ResourceTypes")
    names = [r.get("name") for r in (types.data or {}).get("Resources") or []] if types.ok else []
    report.add(
        "ResourceTypes",
        ", ".join(map(str, names)) if types.ok else types.describe(),
        None if types.ok else False,
    )
    return _required_from_schemas(probe)


def _required_from_schemas(probe: Probe) -> list[str]:
    schemas = probe.send("GET", "/Schemas")
    if not schemas.ok:
        probe.report.add("Schemas", schemas.describe(), False)
        return []
    required: list[str] = []
    for schema in (schemas.data or {}).get("Resources") or []:
        if schema.get("id") != USER:
            continue
        for attr in schema.get("attributes") or []:
            subs = [s["name"] for s in attr.get("subAttributes") or [] if s.get("required")]
            if subs:
                required += [f"{attr['name']}.{s}" for s in subs]
            elif attr.get("required"):
                required.append(attr["name"])
    required = [r for r in required if r not in ("userName", "id")]
    probe.report.add("Schemas: User requires", ", ".join(required) or "userName only", None)
    return required


# -------------------------------------------------------------------- live checks
def check_users(probe: Probe, schema_required: list[str]) -> tuple[str, str] | None:
    """Creates the probe users; returns (user name, id) of the main one, or None."""
    report, settings = probe.report, probe.report.settings
    minimal, main_id = probe.create_user("a")
    if minimal.ok:
        report.add("create with userName only", minimal.describe(), True)
        settings["required_attributes"] = []
    else:
        report.add("create with userName only", minimal.describe(), False)
        settings["required_attributes"] = schema_required or _named_in(minimal.detail)
        full, main_id = probe.create_user("a", **probe.full_user("a"))
        report.add("create with displayName, name, one email", full.describe(), full.ok or None)
        if main_id is None:
            return None
    with_password, _ = probe.create_user("b", **probe.full_user("b"), password="Idprov-pr0be!")
    report.add("create with a password", with_password.describe(), with_password.ok)
    settings["send_password"] = False
    if not with_password.ok:
        probe.create_user("b", **probe.full_user("b"))
    _check_uniqueness(probe)
    return probe.prefix + "a", str(main_id)


def _named_in(detail: str) -> list[str]:
    known = ("displayName", "name.givenName", "name.familyName", "emails")
    return [k for k in known if k.split(".")[-1] in detail]


def _check_uniqueness(probe: Probe) -> None:
    """A second user whose name differs from the first only in case."""
    check = f"userName {(probe.prefix + 'a').upper()} next to {probe.prefix}a"
    reply, _ = probe.create_user("A", **probe.full_user("A"))
    if reply.status == 409:
        probe.report.add(check, "409: unique without regard to case", True)
    elif reply.ok:
        probe.report.add(check, "accepted: two accounts may differ only in case", False)
    else:
        probe.report.add(check, reply.describe(), None)


def check_filters(probe: Probe, user: tuple[str, str]) -> None:
    name, _ = user
    literal = json.dumps(name)
    supported = []
    for op in FILTER_OPERATORS:
        text = f"userName {op}" if op == "pr" else f"userName {op} {literal}"
        reply = probe.send("GET", "/Users", params={"filter": text})
        if reply.ok:
            supported.append(op)
        probe.report.add(f"filter {op}", reply.describe(), reply.ok)
    text = f"userName eq {literal} or userName eq {literal}"
    reply = probe.send("GET", "/Users", params={"filter": text})
    probe.report.add("filter … or …", reply.describe(), reply.ok)
    probe.report.settings["filter_operators"] = supported


def check_paging(probe: Probe, user: tuple[str, str]) -> None:
    report, settings = probe.report, probe.report.settings
    by_index = probe.send("GET", "/Users", params={"startIndex": "1", "count": "1"})
    report.add("paging by startIndex", by_index.describe(), by_index.ok)
    if not by_index.ok:
        by_cursor = probe.send("GET", "/Users", params={"cursor": "", "count": "1"})
        report.add("paging by cursor", by_cursor.describe(), None)
        settings["paging"] = "cursor" if by_cursor.ok else "index"
    else:
        settings["paging"] = "index"
    for size in PAGE_SIZES:
        reply = probe.send("GET", "/Users", params={"count": str(size)})
        if reply.ok:
            settings["page_size"] = min(size, 500)
            report.add("largest count accepted", str(size), size >= 100)
            break
    selected = probe.send(
        "GET",
        "/Users",
        params={"filter": f"userName eq {json.dumps(user[0])}", "attributes": "userName"},
    )
    report.add("attributes= (ask for fewer)", selected.describe(), selected.ok)
    settings["select_attributes"] = selected.ok


def check_bulk(probe: Probe) -> None:
    name = probe.prefix + "bulk"
    data = {"schemas": [USER], "userName": name, **probe.full_user("bulk")}
    body = bulk_request(bulk_batches([data], 1, 0)[0])
    reply = probe.send("POST", "/Bulk", body)
    ops = (reply.data or {}).get("Operations") or [] if reply.ok else []
    location = str((ops[0] if ops else {}).get("location") or "").rstrip("/")
    if location:
        probe.users[name] = location.rsplit("/", 1)[-1]
        probe.report.created.append(f"user {name}")
    works = bool(location)
    probe.report.add("Bulk create", "works" if works else reply.describe(), works)
    probe.report.settings["bulk"] = "auto" if works else "never"


def check_user_patches(probe: Probe, user: tuple[str, str]) -> None:
    report, path = probe.report, f"/Users/{user[1]}"
    forms: dict[str, dict[str, Any]] = {
        "PATCH replace without path": {"op": "replace", "value": {"displayName": "idprov p"}},
        "PATCH replace name.givenName": {
            "op": "replace",
            "path": "name.givenName",
            "value": "Probe",
        },
        "PATCH value-path filter": {
            "op": "replace",
            "path": 'emails[type eq "work"].value',
            "value": f"{user[0]}@example.invalid",
        },
    }
    for check, operation in forms.items():
        reply = probe.patch(path, operation)
        report.add(check, reply.describe(), reply.ok)
    two = [
        {"type": "work", "value": f"w-{user[0]}@example.invalid", "primary": True},
        {"type": "home", "value": f"h-{user[0]}@example.invalid"},
    ]
    reply = probe.patch(path, {"op": "replace", "path": "emails", "value": two})
    report.add("two emails", reply.describe(), reply.ok)
    report.settings["single_valued"] = [] if reply.ok else ["emails", "addresses", "phoneNumbers"]


def check_groups(probe: Probe, user: tuple[str, str], other: str | None) -> None:
    report = probe.report
    name = probe.prefix + "group"
    body = {"schemas": [GROUP], "displayName": name, "members": [{"value": user[1]}]}
    created = probe.send("POST", "/Groups", body)
    group_id = _id(created)
    report.add("create group with a member", created.describe(), created.ok)
    if group_id is None:
        return
    probe.groups[name] = group_id
    report.created.append(f"group {name}")
    _check_members_returned(probe, group_id, user[1])
    if other:
        _check_member_forms(probe, group_id, other)
        _check_member_limit(probe, group_id, other)


def _check_members_returned(probe: Probe, group_id: str, user_id: str) -> None:
    report = probe.report
    got = probe.send("GET", f"/Groups/{group_id}")
    members = [m.get("value") for m in (got.data or {}).get("members") or []] if got.ok else []
    returned = user_id in members
    report.add("group returns its members", "yes" if returned else "no", returned)
    query = f"id eq {json.dumps(group_id)} and members eq {json.dumps(user_id)}"
    by_filter = probe.send("GET", "/Groups", params={"filter": query})
    found = by_filter.ok and bool((by_filter.data or {}).get("Resources"))
    report.add(
        "membership by filter (id eq … and members eq …)",
        "finds it" if found else by_filter.describe(),
        None,
    )
    report.settings["group_members"] = "returned" if returned or not found else "filter"


def _check_member_forms(probe: Probe, group_id: str, other: str) -> None:
    path, member = f"/Groups/{group_id}", [{"value": other}]
    add: dict[str, Any] = {"op": "add", "path": "members", "value": member}
    tries: dict[str, dict[str, Any]] = {
        "PATCH remove member by value-path filter": {
            "op": "remove",
            "path": f"members[value eq {json.dumps(other)}]",
        },
        "PATCH remove member by value": {"op": "remove", "path": "members", "value": member},
    }
    for check, operation in tries.items():
        probe.patch(path, add)
        reply = probe.patch(path, operation)
        probe.report.add(check, reply.describe(), reply.ok)
    replace = probe.patch(path, {"op": "replace", "path": "members", "value": member})
    probe.report.add("PATCH replace all members", replace.describe(), replace.ok)
    remove_all = probe.patch(path, {"op": "remove", "path": "members"})
    probe.report.add("PATCH remove all members", remove_all.describe(), remove_all.ok)


def _check_member_limit(probe: Probe, group_id: str, other: str) -> None:
    add: dict[str, Any] = {"op": "add", "path": "members", "value": [{"value": other}]}
    remove: dict[str, Any] = {"op": "remove", "path": f"members[value eq {json.dumps(other)}]"}
    path = f"/Groups/{group_id}"
    over = probe.patch(path, *([add, remove] * 50), add)
    probe.report.add("101 member changes in one PATCH", over.describe(), over.ok)
    if over.ok:
        probe.report.settings["member_batch_size"] = 100  # idprov's default; none lower seen
        return
    at_limit = probe.patch(path, *([add, remove] * 50))
    probe.report.add("100 member changes in one PATCH", at_limit.describe(), at_limit.ok)
    probe.report.settings["member_batch_size"] = 100 if at_limit.ok else 10


# -------------------------------------------------------------------- verdict
def recommend(report: ProbeReport) -> None:
    """The dialect closest to what was seen, and the options where it differs."""
    seen = {k: v for k, v in report.settings.items() if k in OVERRIDABLE}
    best = max(DIALECTS.values(), key=lambda d: _agreement(d, seen))
    report.dialect = best.name
    report.options = {"dialect": best.name}
    for key, value in seen.items():
        if _normal(getattr(best, key)) != _normal(value) and not _lenient(key, best, value):
            report.options[key] = value


def _agreement(dialect: Dialect, seen: dict[str, Any]) -> int:
    return sum(_normal(getattr(dialect, k)) == _normal(v) for k, v in seen.items())


def _lenient(key: str, dialect: Dialect, value: Any) -> bool:
    """A smaller page or no password where the target allows more is no difference."""
    if key == "page_size":
        return bool(dialect.page_size <= value)
    return key == "send_password" and dialect.send_password is False


def _normal(value: Any) -> Any:
    return sorted(value) if isinstance(value, list | tuple) else value


@contextmanager
def _cleaning(probe: Probe) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        probe.report.interrupted = True
        raise
    finally:
        probe.cleanup()


def run(
    connector: Scim2Connector, on_interrupt: Callable[[ProbeReport], None] | None = None
) -> ProbeReport:
    """Discovery, then the live checks on the probe's own objects, then the verdict.
    Everything created is deleted, also on Ctrl-C (the report then says what was left,
    and ``on_interrupt`` sees it before KeyboardInterrupt goes on)."""
    probe = Probe(connector)
    try:
        with _cleaning(probe):
            _live(probe, discover(probe))
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt(probe.report)
        raise
    recommend(probe.report)
    return probe.report


def _live(probe: Probe, schema_required: list[str]) -> None:
    user = check_users(probe, schema_required)
    if user is None:
        probe.report.add("live checks", "stopped: the probe user could not be created", None)
        return
    other = probe.users.get(probe.prefix + "b")
    check_filters(probe, user)
    check_paging(probe, user)
    check_bulk(probe)
    check_user_patches(probe, user)
    check_groups(probe, user, other)
