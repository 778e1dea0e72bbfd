"""The core service: every change to users and roles goes through here.

:class:`IdentityService` validates a change against the userstore's policy, writes
it, and records it in the audit log, all in one transaction where the store
allows it. It is what the CLI, the CSV import, the SCIM endpoint and JIT login
call; it knows nothing of Typer or rich.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idprov.config import RESIDENT, Config, IdentityProviderConfig, load_config
from idprov.db import DatabasePool, write_transaction
from idprov.errors import NotFoundError, UsageError
from idprov.model import ClaimValue, Page, QualifiedName, Role, User, UserQuery
from idprov.provisioning.internal_roles import INTERNAL, is_internal
from idprov.provisioning.state import AuditEntry, AuditQuery, StateStore
from idprov.userstores import UserStore, open_userstore, policy
from idprov.userstores.passwords import verify_password

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from idprov.connectors.base import CheckReport, Connector
    from idprov.provisioning.engine import OutboundReport, Progress
    from idprov.provisioning.internal_roles import InternalRoles
    from idprov.provisioning.outbox import Kind, OutboxRow
    from idprov.provisioning.tokens import InboundTokens, NewToken, TokenRecord


@dataclass
class ChangeResult:
    """What a change did: the action, its target, the entity after (or before a
    delete), and whether anything changed."""

    action: str
    target: str
    entity: User | Role | None = None
    changed: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    outbound: OutboundReport | None = None
    """What provisioning to the identity providers did (None: none are targeted)."""

    @property
    def outbound_failed(self) -> bool:
        return self.outbound is not None and not self.outbound.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "changed": self.changed,
            "entity": self.entity.to_dict() if self.entity is not None else None,
            **({"details": self.details} if self.details else {}),
            "outbound": self.outbound.to_dict() if self.outbound is not None else None,
        }


def current_actor() -> str:
    """The OS user running idprov, for the audit log."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "unknown"


def open_service(
    config_path: str | None = None, *, application: str = RESIDENT, actor: str | None = None
) -> IdentityService:
    """Load the configuration (discovered as the CLI does) and open a service."""
    return IdentityService(load_config(config_path), application=application, actor=actor)


class IdentityService:
    """Users and roles across all configured userstores, as one application acts."""

    def __init__(
        self,
        config: Config,
        *,
        application: str = RESIDENT,
        actor: str | None = None,
        http_transport: httpx.BaseTransport | None = None,
        progress: Progress | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.http_transport = http_transport
        """Injected into every HTTP connector's client (tests: faults; else None)."""
        self.progress = progress
        """Called after each outbound operation with the report so far (live views)."""
        self.sleep = sleep or time.sleep
        """How the engine waits between retries (tests record instead of sleeping)."""
        self._connectors: dict[str, Connector] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self.run: str | None = None
        """The sync run in progress, recorded with every audit entry it causes."""
        self._own_rows: list[int] = []
        self._passwords: dict[str, str] = {}
        """Passwords set in this command, by user id, for connectors that send them;
        only in memory."""
        self.application = config.application(application).name
        self.actor = actor or current_actor()
        self.claims = config.claim_definitions()
        if config.identity_providers:
            from idprov.provisioning.connect import check_identity_providers

            check_identity_providers(config)
        self.data_dir = Path(config.data_dir or ".")
        self._pool = DatabasePool()
        self._stores: dict[str, UserStore] = {}
        self._state: StateStore | None = None

    def executor(self, idp: str) -> ThreadPoolExecutor:
        """The worker threads of IdP ``idp`` (``max_concurrency`` of them), made once."""
        if idp not in self._executors:
            from concurrent.futures import ThreadPoolExecutor

            self._executors[idp] = ThreadPoolExecutor(
                max_workers=self.idp(idp).max_concurrency, thread_name_prefix=f"idprov-{idp}"
            )
        return self._executors[idp]

    def close(self) -> None:
        for pool in self._executors.values():
            pool.shutdown(wait=True, cancel_futures=True)
        self._executors.clear()
        for connector in self._connectors.values():
            connector.close()
            if connector.client is not None:
                connector.client.close()
        self._connectors.clear()
        for store in self._stores.values():
            store.close()
        self._stores.clear()
        self._pool.close()

    def __enter__(self) -> IdentityService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing
    @property
    def state(self) -> StateStore:
        if self._state is None:
            self._state = StateStore(self._pool.get(StateStore.path_in(self.data_dir)))
        return self._state

    def store(self, domain: str | None = None) -> UserStore:
        """The userstore of ``domain`` (default PRIMARY), opened on first use."""
        config = self.config.userstore(domain or "PRIMARY")
        key = config.domain.casefold()
        if key not in self._stores:
            self._stores[key] = open_userstore(config, self.claims, self._pool, self.data_dir)
        return self._stores[key]

    def resolve(self, name: str, domain: str | None = None) -> tuple[UserStore, str]:
        """The store and bare name that ``DOMAIN/name`` (or ``--domain``) points to."""
        qualified = QualifiedName.parse(name, domain)
        if domain and "/" in name and qualified.domain.casefold() != domain.casefold():
            raise UsageError(f"{name!r} names domain {qualified.domain}, but --domain is {domain}")
        if not qualified.name:
            raise UsageError(f"{name!r} has no name after the domain")
        return self.store(qualified.domain), qualified.name

    @contextmanager
    def writing(self, store: UserStore) -> Iterator[None]:
        """One transaction over a change to ``store`` and idprov's own records (the
        audit log, the outbox): commit together, or not at all, where the store allows."""
        with self._writing(store):
            yield

    def audit(self, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        """Record a change in the audit log (inside :meth:`writing`)."""
        self._audit(action, target, details)

    def enqueue(self, kind: Kind, entity_id: str, domain: str, label: str) -> None:
        """Ask for a user or role to be reconciled at the application's IdPs (inside
        :meth:`writing`); :meth:`take_own_rows` hands the rows to drain."""
        self._enqueue(kind, entity_id, domain, label)

    def take_password(self, user_id: str) -> str | None:
        """The password this command set for ``user_id``, handed over once (the engine
        takes it for the push that follows the change), or None."""
        return self._passwords.pop(user_id, None)

    def take_own_rows(self) -> list[int]:
        rows, self._own_rows = self._own_rows, []
        return rows

    @contextmanager
    def _writing(self, store: UserStore) -> Iterator[None]:
        """One transaction over the store's change and the state records. The store's
        commits first: when a store on another database (PostgreSQL) fails to commit,
        the state records (audit, outbox, import journal) roll back with it."""
        store.ensure_writable()
        with ExitStack() as stack:
            stack.enter_context(write_transaction(self.state.db))
            stack.enter_context(store.transaction())
            yield

    def _audit(self, action: str, target: str, details: dict[str, Any] | None = None) -> None:
        self.state.audit(
            actor=self.actor,
            application=self.application,
            action=action,
            target=target,
            details=details,
            run=self.run,
        )

    def audit_outbound(
        self, action: str, target: str, outcome: str, details: dict[str, Any]
    ) -> None:
        """One outbound attempt in the audit log (the engine calls this; no secrets)."""
        self.state.audit(
            actor=self.actor,
            application=self.application,
            action=action,
            target=target,
            outcome=outcome,
            details=details,
            run=self.run,
        )

    # ---- outbound
    def idp(self, name: str) -> IdentityProviderConfig:
        for idp in self.config.identity_providers:
            if idp.name == name:
                return idp
        declared = ", ".join(i.name for i in self.config.identity_providers) or "none"
        raise NotFoundError(f"no identity provider named {name!r}", hint=f"declared: {declared}")

    def targets(self) -> list[str]:
        """Enabled identity providers the acting application provisions to."""
        names = self.config.application(self.application).identity_providers
        return [n for n in names if self.idp(n).enabled]

    def connector(self, name: str) -> Connector:
        """The connector of IdP ``name``, made on first use with its own HTTP client."""
        if name not in self._connectors:
            from idprov.provisioning.connect import open_connector

            self._connectors[name] = open_connector(self.idp(name), self.http_transport, self.sleep)
        return self._connectors[name]

    def _enqueue(self, kind: Kind, entity_id: str, domain: str, label: str) -> None:
        targets = self.targets()
        if targets:
            self._own_rows += self.state.outbox.enqueue(targets, kind, entity_id, domain, label)

    def _enqueue_users(self, store: UserStore, user_ids: Sequence[str]) -> None:
        if not self.targets():
            return
        for user_id in user_ids:
            user = store.find_user_by_id(user_id)
            if user is not None:
                self._enqueue("user", user.id, store.domain, user.qualified_name)

    def _enqueue_names(self, store: UserStore, usernames: Sequence[str]) -> None:
        if not self.targets():
            return
        for username in usernames:
            user = store.find_user(username)
            if user is not None:
                self._enqueue("user", user.id, store.domain, user.qualified_name)

    def _push(self, result: ChangeResult) -> ChangeResult:
        """Drain what this command enqueued (and pending rows a crashed one left)."""
        if not self._own_rows and not self.targets():
            return result
        rows = self.state.outbox.rows(self._own_rows, stale_pending=True)
        self._own_rows = []
        result.outbound = self.drain(rows)
        return result

    def drain(self, rows: Sequence[OutboxRow]) -> OutboundReport:
        """Reconcile ``rows`` at their identity providers now (see the engine)."""
        from idprov.provisioning.engine import Engine

        return Engine(self, self.progress, self.sleep).drain(rows)

    def retry_outbox(self, idps: Sequence[str] | None = None) -> OutboundReport:
        """Drain every pending and failed row (of ``idps``, or of all IdPs)."""
        return self.drain(self.state.outbox.rows(idps=idps))

    def outbox_rows(
        self, idps: Sequence[str] | None = None, status: str | None = None
    ) -> list[OutboxRow]:
        return self.state.outbox.rows(idps=idps, status=status)

    def test_idp(self, name: str) -> CheckReport:
        """Reachability, authentication and capabilities of IdP ``name``; changes nothing."""
        return self.connector(name).check()

    # ---- users
    def get_user(self, username: str, domain: str | None = None) -> User:
        store, name = self.resolve(username, domain)
        user = store.find_user(name)
        if user is None:
            raise NotFoundError(
                f"no user {name!r} in the {store.domain} userstore",
                hint="list users with `idprov user list`",
            )
        return self._with_internal_roles([user])[0]

    @property
    def internal(self) -> InternalRoles:
        """Roles that hold users of several domains (``Internal/NAME``)."""
        from idprov.provisioning.internal_roles import InternalRoles

        return InternalRoles(self.state.db)

    def _with_internal_roles(self, users: list[User]) -> list[User]:
        """Add each user's internal roles (``Internal/NAME``) to its roles."""
        if users:
            held = self.internal.roles_of([u.id for u in users])
            for user in users:
                user.roles = [*user.roles, *held.get(user.id, [])]
        return users

    def users_by_id(self, refs: Iterable[tuple[str, str]]) -> dict[str, User]:
        """Users by id, from (domain, id) pairs, with their internal roles."""
        by_domain: dict[str, list[str]] = {}
        for domain, user_id in refs:
            by_domain.setdefault(domain, []).append(user_id)
        found: dict[str, User] = {}
        for domain, ids in by_domain.items():
            found.update(self.store(domain).find_users_by_id(ids))
        self._with_internal_roles(list(found.values()))
        return found

    def role_by_id(self, domain: str, role_id: str) -> Role | None:
        if is_internal(domain):
            return self.internal.find_by_id(role_id)
        return self.store(domain).find_role_by_id(role_id)

    def role_members(self, domain: str, role_id: str) -> list[tuple[str, str]]:
        """(domain, user id) of the role's members."""
        if is_internal(domain):
            return [(d, u) for d, u, _ in self.internal.members(role_id)]
        return [(domain, u) for u in self.store(domain).role_member_ids(role_id)]

    def list_users(self, query: UserQuery, domain: str | None = None) -> Page:
        """One domain's users, or every domain's (in configuration order) when None."""
        policy.check_claim_names(query.claims, self.claims)
        domains = [domain] if domain else [u.domain for u in self.config.userstores]
        items: list[User] = []
        total, skip = 0, query.offset
        for d in domains:
            store = self.store(d)
            remaining = None if query.limit is None else max(query.limit - len(items), 0)
            page = store.list_users(
                UserQuery(query.claims, query.role, query.username_prefix, remaining, skip)
            )
            total += page.total
            items += page.items
            skip = max(skip - page.total, 0)
        return Page(self._with_internal_roles(items), total, query.offset, query.limit)

    def add_user(
        self,
        username: str,
        claims: Mapping[str, ClaimValue] | None = None,
        password: str | None = None,
        roles: Sequence[str] = (),
        domain: str | None = None,
    ) -> ChangeResult:
        """Create a user with claims, an optional password and roles (which must exist)."""
        store, name = self.resolve(username, domain)
        claims = dict(claims or {})
        policy.check_username(store.config.policy, name, store.domain)
        policy.check_claims(claims, self.claims, name)
        policy.check_required(claims, store.config.policy, name, store.domain)
        role_names = [self._same_domain_role(store, r) for r in roles]
        pw_hash = None
        if password is not None:
            policy.check_password(store.config.policy, password, store.domain)
            pw_hash = store.hash_password(password)
        with self._writing(store):
            user = store.add_user(name, claims, pw_hash)
            for role_name in role_names:
                store.assign(role_name, [name])
                role = store.find_role(role_name)
                if role is not None:
                    self._enqueue("role", role.id, store.domain, role.qualified_name)
            self._audit(
                "user.add",
                user.qualified_name,
                {"claims": sorted(claims), "roles": role_names, "password": pw_hash is not None},
            )
            self._enqueue("user", user.id, store.domain, user.qualified_name)
        if password is not None:
            self._passwords[user.id] = password
        return self._push(
            ChangeResult("user.add", user.qualified_name, self.get_user(name, store.domain))
        )

    def update_user(
        self,
        username: str,
        set_claims: Mapping[str, ClaimValue] | None = None,
        unset: Sequence[str] = (),
        domain: str | None = None,
    ) -> ChangeResult:
        """Set and remove claims; an update that changes nothing records nothing."""
        store, name = self.resolve(username, domain)
        set_claims = dict(set_claims or {})
        policy.check_claims(set_claims, self.claims, name)
        policy.check_claim_names(unset, self.claims)
        before = self.get_user(name, store.domain)
        after_claims = {k: v for k, v in {**before.claims, **set_claims}.items() if k not in unset}
        policy.check_required(after_claims, store.config.policy, name, store.domain)
        if after_claims == before.claims:
            return ChangeResult("user.update", before.qualified_name, before, changed=False)
        with self._writing(store):
            user = store.update_user(name, set_claims, list(unset))
            changed = sorted(
                k
                for k in {*before.claims, *user.claims}
                if before.claims.get(k) != user.claims.get(k)
            )
            self._audit("user.update", user.qualified_name, {"claims": changed})
            self._enqueue("user", user.id, store.domain, user.qualified_name)
        return self._push(
            ChangeResult("user.update", user.qualified_name, user, details={"claims": changed})
        )

    def set_password(self, username: str, password: str, domain: str | None = None) -> ChangeResult:
        store, name = self.resolve(username, domain)
        user = self.get_user(name, store.domain)
        policy.check_password(store.config.policy, password, store.domain)
        pw_hash = store.hash_password(password)
        with self._writing(store):
            store.set_password_hash(name, pw_hash)
            self._audit("user.passwd", user.qualified_name)
            self._enqueue("user", user.id, store.domain, user.qualified_name)
        self._passwords[user.id] = password
        return self._push(
            ChangeResult("user.passwd", user.qualified_name, self.get_user(name, store.domain))
        )

    def verify_password(self, username: str, password: str, domain: str | None = None) -> bool:
        """Whether ``password`` is the user's; False for users without a password."""
        store, name = self.resolve(username, domain)
        return verify_password(password, store.password_hash(name))

    def delete_user(self, username: str, domain: str | None = None) -> ChangeResult:
        store, name = self.resolve(username, domain)
        with self._writing(store):
            existing = store.find_user(name)
            internal = self.internal.roles_of_user(existing.id) if existing else []
            user = store.delete_user(name)
            self.internal.forget_user(user.id)
            for role in internal:
                self._enqueue("role", role.id, INTERNAL, role.qualified_name)
            self._audit(
                "user.delete",
                user.qualified_name,
                {"roles": [*user.roles, *(r.qualified_name for r in internal)]},
            )
            self._enqueue("user", user.id, store.domain, user.qualified_name)
            for role_name in user.roles:
                found = store.find_role(role_name)
                if found is not None:
                    self._enqueue("role", found.id, store.domain, found.qualified_name)
        return self._push(ChangeResult("user.delete", user.qualified_name, user))

    # ---- roles
    def _in_domain_of(self, store: UserStore, name: str) -> tuple[UserStore, str]:
        """Where ``name`` points, a bare name being in ``store``'s domain."""
        qualified = QualifiedName.parse(name, store.domain)
        return self.store(qualified.domain), qualified.name

    def _same_domain_role(self, store: UserStore, role: str) -> str:
        role_store, role_name = self._in_domain_of(store, role)
        if role_store is not store:
            raise UsageError(
                f"role {role!r} is in another domain than the {store.domain} user",
                hint="a role holds users of its own userstore domain",
            )
        if store.find_role(role_name) is None:
            raise NotFoundError(
                f"no role {role_name!r} in the {store.domain} userstore",
                hint=f"create it first with `idprov role add {role}`",
            )
        return role_name

    def _internal_name(self, name: str, domain: str | None) -> str | None:
        """The bare name if ``name``/``domain`` address an internal role, else None."""
        qualified = QualifiedName.parse(name, domain)
        return qualified.name if is_internal(qualified.domain) else None

    def get_role(self, name: str, domain: str | None = None) -> Role:
        if (internal := self._internal_name(name, domain)) is not None:
            return self.internal.get(internal, with_members=True)
        store, bare = self.resolve(name, domain)
        role = store.find_role(bare, with_members=True)
        if role is None:
            raise NotFoundError(
                f"no role {bare!r} in the {store.domain} userstore",
                hint="list roles with `idprov role list`",
            )
        return role

    def list_roles(self, domain: str | None = None, prefix: str | None = None) -> list[Role]:
        """One domain's roles (``Internal`` for internal roles), or all of them."""
        if is_internal(domain):
            return self.internal.all(prefix)
        domains = [domain] if domain else [u.domain for u in self.config.userstores]
        roles = [r for d in domains for r in self.store(d).list_roles(prefix)]
        return roles if domain else [*roles, *self.internal.all(prefix)]

    def add_role(self, name: str, domain: str | None = None) -> ChangeResult:
        if (internal := self._internal_name(name, domain)) is not None:
            policy.check_role_name(self.store().config.policy, internal, INTERNAL)
            return self._internal_change("role.add", internal, lambda: self.internal.add(internal))
        store, bare = self.resolve(name, domain)
        policy.check_role_name(store.config.policy, bare, store.domain)
        with self._writing(store):
            role = store.add_role(bare)
            self._audit("role.add", role.qualified_name)
            self._enqueue("role", role.id, store.domain, role.qualified_name)
        return self._push(ChangeResult("role.add", role.qualified_name, role))

    def delete_role(self, name: str, domain: str | None = None) -> ChangeResult:
        if (internal := self._internal_name(name, domain)) is not None:
            members = self.role_members(INTERNAL, self.internal.get(internal).id)
            return self._internal_change(
                "role.delete", internal, lambda: self.internal.delete(internal), members
            )
        store, bare = self.resolve(name, domain)
        with self._writing(store):
            found = store.find_role(bare)
            member_ids = store.role_member_ids(found.id) if found is not None else []
            role = store.delete_role(bare)
            self._audit("role.delete", role.qualified_name, {"members": role.members or []})
            self._enqueue_users(store, member_ids)
            self._enqueue("role", role.id, store.domain, role.qualified_name)
        return self._push(ChangeResult("role.delete", role.qualified_name, role))

    def rename_role(self, name: str, new_name: str, domain: str | None = None) -> ChangeResult:
        if (internal := self._internal_name(name, domain)) is not None:
            new = QualifiedName.parse(new_name, INTERNAL).name
            policy.check_role_name(self.store().config.policy, new, INTERNAL)
            members = self.role_members(INTERNAL, self.internal.get(internal).id)
            result = self._internal_change(
                "role.rename", internal, lambda: self.internal.rename(internal, new), members
            )
            result.details = {"from": internal}
            return result
        store, bare = self.resolve(name, domain)
        new_store, new_bare = self._in_domain_of(store, new_name)
        if new_store is not store:
            raise UsageError("a role cannot be renamed into another domain")
        policy.check_role_name(store.config.policy, new_bare, store.domain)
        with self._writing(store):
            role = store.rename_role(bare, new_bare)
            self._audit("role.rename", role.qualified_name, {"from": bare})
            self._enqueue_users(store, store.role_member_ids(role.id))
            self._enqueue("role", role.id, store.domain, role.qualified_name)
        return self._push(
            ChangeResult("role.rename", role.qualified_name, role, details={"from": bare})
        )

    def _members(self, store: UserStore, users: Sequence[str]) -> list[str]:
        names = []
        for user in users:
            user_store, bare = self._in_domain_of(store, user)
            if user_store is not store:
                raise UsageError(
                    f"user {user!r} is in another domain than the role",
                    hint="a role holds users of its own userstore domain",
                )
            names.append(bare)
        return names

    def assign(self, role: str, users: Sequence[str], domain: str | None = None) -> ChangeResult:
        """Make ``users`` members of ``role``; those already members are left as they are."""
        if (internal := self._internal_name(role, domain)) is not None:
            return self._internal_membership("role.assign", internal, users, assign=True)
        store, bare = self.resolve(role, domain)
        names = self._members(store, users)
        with self._writing(store):
            added = store.assign(bare, names)
            result = self.get_role(bare, store.domain)
            if added:
                self._audit("role.assign", result.qualified_name, {"users": added})
                self._enqueue_names(store, added)
                self._enqueue("role", result.id, store.domain, result.qualified_name)
        return self._push(
            ChangeResult(
                "role.assign", result.qualified_name, result, bool(added), {"added": added}
            )
        )

    def unassign(self, role: str, users: Sequence[str], domain: str | None = None) -> ChangeResult:
        if (internal := self._internal_name(role, domain)) is not None:
            return self._internal_membership("role.unassign", internal, users, assign=False)
        store, bare = self.resolve(role, domain)
        names = self._members(store, users)
        with self._writing(store):
            removed = store.unassign(bare, names)
            result = self.get_role(bare, store.domain)
            if removed:
                self._audit("role.unassign", result.qualified_name, {"users": removed})
                self._enqueue_names(store, removed)
                self._enqueue("role", result.id, store.domain, result.qualified_name)
        return self._push(
            ChangeResult(
                "role.unassign", result.qualified_name, result, bool(removed), {"removed": removed}
            )
        )

    # ---- internal roles
    def _internal_change(
        self,
        action: str,
        name: str,
        change: Callable[[], Role],
        members: Sequence[tuple[str, str]] = (),
    ) -> ChangeResult:
        with write_transaction(self.state.db):
            role = change()
            self._audit(action, role.qualified_name)
            for domain, user_id in members:
                self._enqueue("user", user_id, domain, user_id)
            self._enqueue("role", role.id, INTERNAL, role.qualified_name)
        return self._push(ChangeResult(action, role.qualified_name, role))

    def _internal_membership(
        self, action: str, name: str, users: Sequence[str], assign: bool
    ) -> ChangeResult:
        """Members of any domain: ``DOMAIN/username``, bare names being PRIMARY."""
        found = [self.get_user(u) for u in users]
        with write_transaction(self.state.db):
            if assign:
                changed = self.internal.assign(name, found)
            else:
                changed = self.internal.unassign(name, found)
            role = self.internal.get(name, with_members=True)
            if changed:
                self._audit(action, role.qualified_name, {"users": changed})
                for user in found:
                    if user.qualified_name in changed:
                        self._enqueue("user", user.id, user.domain, user.qualified_name)
                self._enqueue("role", role.id, INTERNAL, role.qualified_name)
        key = "added" if assign else "removed"
        return self._push(
            ChangeResult(action, role.qualified_name, role, bool(changed), {key: changed})
        )

    # ---- inbound tokens
    @property
    def tokens(self) -> InboundTokens:
        from idprov.provisioning.tokens import InboundTokens

        return InboundTokens(self.state.db)

    def create_token(self, application: str, description: str = "") -> NewToken:
        """A new bearer token for `idprov serve`, acting as ``application``; the token is
        in the result once and stored only as a digest."""
        app = self.config.application(application).name
        with write_transaction(self.state.db):
            new = self.tokens.create(app, description, self.actor)
            self._audit("token.create", new.record.id, {"application": app})
        return new

    def revoke_token(self, token_id: str) -> TokenRecord:
        with write_transaction(self.state.db):
            record = self.tokens.revoke(token_id)
            self._audit("token.revoke", token_id, {"application": record.application})
        return record

    # ---- audit
    def audit_log(self, query: AuditQuery) -> list[AuditEntry]:
        return self.state.audit_entries(query)
