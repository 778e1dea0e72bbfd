"""The connector contract: how idprov talks to one kind of external system.

A connector is a small class with a ``name``, an ``Options`` dataclass (validated
from the identity provider's ``options:`` like the rest of the configuration, so
unknown keys are refused with file and line), default attribute mappings, and
methods that create, update, disable and delete users and groups and change group
membership. It never imports userstores or other connectors, and never retries:
the engine retries what a :class:`TargetError` says is retryable.

Built-in connectors register through the ``idprov.connectors`` entry-point group,
as third-party ones do.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from idprov.errors import OutboundError, UsageError
from idprov.secrecy import blank, hold

if TYPE_CHECKING:
    from idprov.config.models import IdentityProviderConfig
    from idprov.connectors.http_client import HttpClient


_status = threading.local()


def note_status(status: int | None) -> None:
    """HTTP connectors call this with each response's status (per thread), so the
    engine can put the status of every attempt in the audit log."""
    _status.value = status


def last_status() -> int | None:
    return getattr(_status, "value", None)


@dataclass(frozen=True)
class Account:
    """A user as it should look at the target: mapped, not local."""

    local_id: str
    user_name: str
    attributes: Mapping[str, Any]
    """Target attribute path -> value, from the IdP's attribute mapping."""
    active: bool = True
    password: str | None = field(default=None, repr=False, compare=False)
    """The password given in this very command (user add, user passwd), for connectors
    that send passwords; only in memory, never in the outbox, the ledger or a log."""
    unique: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)
    """Attribute (or ``userName``) -> the candidates of a unique() mapping, in order,
    until the target has been asked which one is free (creates only)."""
    enable: bool = False
    """For :meth:`Connector.update_user`: idprov enables again the account it disabled
    (the ledger says so), and the update sends the activation (SCIM ``active``, Google
    ``suspended``, Salesforce ``IsActive``, an SPML resume). Never otherwise: an update
    without it, ``previous`` or not (an adoption, a repair), leaves the account as
    active or disabled as it is there, since an administrator may have disabled it."""

    def __post_init__(self) -> None:
        # Blanked in any error while this account exists (a target echoing the request).
        if self.password:
            hold(self, self.password)


@dataclass(frozen=True)
class GroupSpec:
    """A role as it should look at the target (members are handled separately)."""

    local_id: str
    display_name: str
    member_ids: Sequence[str] = ()
    """Remote ids of the members, used only when the group is created."""


@dataclass(frozen=True)
class RemoteMatch:
    """What a look-up after an uncertain create found at the target."""

    remote_id: str
    ours: bool
    """True only when the object carries idprov's mark for this very entity (SCIM's
    ``externalId`` equal to the one idprov sends, say). False when it carries another
    mark, or none, or the target cannot hold one: then nothing proves idprov made it."""


@dataclass(frozen=True)
class MembersDone:
    """What a :meth:`Connector.change_members` call that failed part way did: the
    remote user ids of group ``group`` that the target acknowledged adding and
    removing before it failed (or while other changes of the same call failed)."""

    group: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass
class CheckReport:
    """What `idprov idp test` found: reachability, authentication, capabilities."""

    reachable: bool = False
    authenticated: bool | None = False
    """None: unknown (the endpoint was not found: no credentials were tried)."""
    capabilities: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    checked: bool = True
    """False: the connector has no check (:meth:`Connector.check` is optional), so
    nothing is known; `idp test` says so and does not fail."""

    @property
    def ok(self) -> bool:
        return self.reachable and self.authenticated is True

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "reachable": self.reachable,
            "authenticated": self.authenticated,
            "capabilities": self.capabilities,
            "messages": self.messages,
        }


class MappingInvalid(ValueError):
    """An attribute mapping a connector cannot work with (from :meth:`check_mapping`);
    `config validate` reports it with the file and line of ``path`` (under the IdP:
    its ``attributes``, unless an option is to blame), and ``hint``."""

    def __init__(
        self, message: str, hint: str | None = None, path: tuple[str, ...] = ("attributes",)
    ) -> None:
        super().__init__(message)
        self.hint = hint
        self.path = path


def check_mark(
    attribute: str | None,
    option: str,
    defaults: Mapping[str, str | None],
    attributes: Mapping[str, str | None],
    allow_id: bool = True,
) -> None:
    """MappingInvalid when the attribute mapping (the connector's ``defaults``, with the
    IdP's ``attributes`` over them) fills ``attribute``, the one that carries idprov's
    mark (named by the option ``option``), with anything but idprov's id, ``{ID}``. A
    claim there (an HR number, an e-mail) is a value another system's account may hold
    too: idprov would take that account for one it created (adopt it after a lost
    reply, overwrite it, delete it on deprovision). The mark is idprov's alone.
    ``allow_id`` False: ``{ID}`` is refused too (any mapping that names the mark).
    Attribute names compare case-insensitively, as LDAP, DSML and Salesforce do."""
    if attribute is None:
        return
    wanted = attribute.casefold()
    mapped = {
        name.casefold(): (name, template, "the default mapping")
        for name, template in defaults.items()
    }
    mapped.update(
        {name.casefold(): (name, template, "attributes") for name, template in attributes.items()}
    )
    name, template, where = mapped.get(wanted, (attribute, None, ""))
    if template is None or (allow_id and template.strip() == "{ID}"):
        return
    raise MappingInvalid(
        f"{option} {attribute} is also filled by the attribute mapping ({name}: "
        f"{template!r}, {where}): idprov's mark must hold only idprov's id, or an "
        "account of another system holding that value is taken for one idprov created "
        "(adopted, overwritten, deleted on deprovision)",
        hint=f"set {option} to an attribute nothing else writes, or map {name}: null "
        "(or '{ID}') under the IdP's attributes",
        path=("options", option),
    )


def hold_back(
    attributes: Mapping[str, Any], held: frozenset[str], previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``attributes`` (what the mapping gives now) with the ``held`` ones (see
    :meth:`Connector.held_back`) as ``previous`` (what was last sent) had them: the
    connector never sends them in an update, so nothing of theirs changes there."""
    if not held:
        return dict(attributes)
    out = {k: v for k, v in attributes.items() if k.casefold() not in held}
    out.update({k: v for k, v in (previous or {}).items() if k.casefold() in held})
    return out


class TargetError(OutboundError):
    """The target refused or failed an operation. ``retryable`` says whether trying
    again can help (timeouts, 408, 429, 5xx); ``retry_after`` is the target's own
    wish in seconds; ``status`` the HTTP status when there was one.

    The message and hint are built from what the target said: every secret idprov
    holds (its credentials, users' passwords, the request just sent) is blanked in
    them here (:func:`idprov.secrecy.blank`), whichever connector raises it."""

    code = "target"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        hint: str | None = None,
        ambiguous: bool = False,
        accepted: bool = False,
        partial: bool = False,
        members_done: MembersDone | None = None,
    ) -> None:
        super().__init__(blank(message), hint=blank(hint) if hint else hint)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.ambiguous = ambiguous
        """True when the target may have done the operation anyway (timeout, 5xx)."""
        self.accepted = accepted
        """True when the target acknowledged the request and will carry it out later
        (SPML ``pending``): what a create then makes is provably idprov's."""
        self.partial = partial
        """True when part of the operation was done before it failed, and a repeat
        resumes where it stopped (group members): the engine then does not count the
        failure against ``retry.max_attempts``."""
        self.members_done = members_done
        """From :meth:`Connector.change_members` (and a create of a group with members):
        the membership changes the target acknowledged although the call failed. The
        engine records them, so that a later removal takes those members out again."""


class RemoteConflict(TargetError):
    """The object to create exists already (by the key the target enforces)."""

    code = "remote_conflict"


class RemoteNotFound(TargetError):
    """The remote object is gone. From update, rename and membership calls this makes
    the engine re-create the object (a deletion at the target is repaired); delete
    and disable calls treat a missing object as done and do not raise it."""

    code = "remote_not_found"


class Throttled(TargetError):
    """The target asks idprov to slow down: HTTP 429, Google's 403
    ``rateLimitExceeded``, Salesforce's ``REQUEST_LIMIT_EXCEEDED``. Always retryable;
    the engine feeds it to the IdP's rate limiter, which slows down for a few seconds."""

    code = "throttled"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs["retryable"] = True
        super().__init__(message, **kwargs)


class CredentialsRefused(TargetError):
    """The target (or its token endpoint) refused idprov's credentials or their
    permissions: 401, 403 that is not throttling, ``invalid_grant``. Nothing else will
    work at that IdP: the engine stops its batch after the first, leaving the rest of
    the rows pending. Never retryable."""

    code = "credentials"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs["retryable"] = False
        kwargs.setdefault("hint", "check the identity provider's credentials and permissions")
        super().__init__(message, **kwargs)


def created_without_password(exc: TargetError, remote_id: str) -> TargetError:
    """``exc``, the failure to set the password of the account ``remote_id`` just
    created, as an ambiguous error: the account exists, so a repeat looks it up and
    adopts it (then sets the password) rather than create it again."""
    return TargetError(
        f"{exc.message} (the account {remote_id} was created without its password)",
        status=exc.status,
        retryable=exc.retryable,
        ambiguous=True,
        hint=exc.hint or "set it again with `idprov user passwd`",
    )


class Connector(ABC):
    """One identity provider's connection. Instances are used from several threads
    at once by the engine: keep per-call state local."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type]
    default_attributes: ClassVar[Mapping[str, str]] = {}
    """Target attribute path -> template, used unless the IdP's ``attributes`` override."""
    uses_http: ClassVar[bool] = True
    default_deprovision: ClassVar[Literal["delete", "disable"]] = "delete"
    """What leaving scope does when the IdP does not say (``deprovision:``)."""
    deletes_groups: ClassVar[bool] = True
    """Whether :meth:`delete_group` removes the group, and every membership with it.
    False when the group is not idprov's (a Salesforce permission set): the engine
    then first removes the members idprov put there, so that no access is left."""
    members_dangle: ClassVar[bool] = True
    """Whether a group's member can reference nothing at the target (an account
    deleted without leaving its groups). False where that cannot happen (Salesforce:
    users are never deleted, a deleted group takes its memberships): ``sync --verify``
    then does not read each member idprov does not own to look for one."""
    limiter: Any = None
    """The IdP's rate limiter (:class:`~idprov.connectors.http.RateLimiter`), set by
    idprov when it opens an HTTP connector; shared by the connector's threads."""

    def __init__(
        self, idp: IdentityProviderConfig, options: Any, client: HttpClient | None
    ) -> None:
        self.idp = idp
        self.options = options
        self.client = client

    def throttled(self) -> None:
        """The target asked to slow down (the engine calls this for each
        :class:`Throttled` it sees): the rate limiter halves its pace for a while."""
        if self.limiter is not None:
            self.limiter.throttled()

    @classmethod
    def default_attributes_for(cls, options: Any) -> Mapping[str, str]:
        """The default mapping for an IdP with these options (a dialect may add to it)."""
        return cls.default_attributes

    @classmethod
    def check_mapping(cls, idp: IdentityProviderConfig, options: Any) -> None:
        """MappingInvalid if ``idp``'s attribute mapping cannot work with this connector
        and these options (called by `config validate` and when a service opens). Here:
        unique() on an attribute when the connector can check only user names."""
        if cls.value_taken is not Connector.value_taken:
            return
        for target, template in idp.attributes.items():
            if template is not None and re.match(r"=\s*unique\s*\(", template):
                raise MappingInvalid(
                    f"{target}: the {cls.name} connector can check only user names for unique()",
                    hint="use unique() in the IdP's username template only",
                )

    @classmethod
    def held_back(cls, options: Any) -> frozenset[str]:
        """The mapped attributes (casefolded names) this connector never sends in an
        update, whatever the mapping says: the one carrying idprov's mark, written on
        create alone. A plan compares and the deletion guard counts only what is sent,
        so for these the ledger keeps what was last sent (:func:`hold_back`)."""
        return frozenset()

    def carries_mark(self, remote: Mapping[str, Any], account: Account) -> bool | None:
        """Whether the account ``remote`` (as :meth:`read_user` returns it) carries
        idprov's mark for ``account`` (its local id): proof that idprov created or
        adopted it as its own. None: this connector keeps no mark (nothing to tell)."""
        return None

    def stamp_mark(self, remote_id: str, account: Account) -> None:
        """Write idprov's mark (``account``'s local id) on the existing account
        ``remote_id``, changing nothing else: an operator confirmed it is idprov's
        (`idprov idp stamp`). Idempotent."""
        raise UsageError(
            f"the {self.name} connector keeps no mark of idprov's on accounts",
            hint="nothing to stamp: its accounts are idprov's by the ledger alone",
        )

    def value_taken(self, attribute: str, value: str, account: Account) -> bool:
        """Whether the target already holds ``value`` in ``attribute`` (``userName``,
        or a mapped attribute) on an account that is not provably ``account``'s own,
        for unique() mappings. Read-only."""
        if attribute == "userName":
            match = self.lookup_user(dataclasses.replace(account, user_name=value))
            return match is not None and not match.ours
        raise TargetError(
            f"the {self.name} connector cannot check whether {attribute} values are unique",
            hint="use unique() for the user name only with this connector",
        )

    def probe(self, on_interrupt: Any = None) -> Any:
        """`idp test --probe`: what the target really does (see scim_probe). Creates and
        deletes objects of its own. Only SCIM 2.0 targets have one."""
        raise UsageError(
            f"--probe is for SCIM 2.0 targets; the {self.name} connector has no conformance probe",
            hint="`idprov idp test NAME` (without --probe) checks this identity provider",
        )

    def check(self) -> CheckReport:
        """Reachability, authentication and capabilities; changes nothing. Optional:
        without it `idprov idp test` says that this connector has no check (and does
        not fail); implement it to tell an operator whether the target answers and
        accepts idprov's credentials (a cheap authenticated GET)."""
        return CheckReport(
            authenticated=None,
            checked=False,
            messages=[
                f"the {self.name} connector has no check: whether the target is reachable "
                "is not known until idprov pushes to it"
            ],
        )

    @abstractmethod
    def create_user(self, account: Account) -> str:
        """Create the account; return its remote id. RemoteConflict if it exists.
        Not idempotent: the engine looks the user up before retrying an ambiguous one."""

    def accepts_password(self) -> bool:
        """Whether this connector sends passwords (its options say so)."""
        return bool(getattr(self.options, "send_password", False))

    def bulk_create_limit(self) -> int:
        """How many accounts one :meth:`create_users` call may carry; 0 or 1: no bulk."""
        return 0

    def bulk_threshold(self) -> int:
        """Fewer creates than this go out one by one even when bulk is possible."""
        return 10

    def create_users(self, accounts: Sequence[Account]) -> list[str | TargetError]:
        """Create several accounts in one call: per account, its remote id or the
        error the target gave for it (RemoteConflict for an existing one). Raises
        TargetError when the call as a whole failed. Not idempotent."""
        raise NotImplementedError

    @abstractmethod
    def find_user(self, user_name: str) -> str | None:
        """The remote id of the account with this user name, or None. Read-only."""

    def lookup_user(self, account: Account) -> RemoteMatch | None:
        """The account the target holds under ``account``'s user name, and whether it
        is provably idprov's, or None. Read-only. The engine calls this after any
        create whose outcome is unknown, before it sends anything again. The default
        finds by user name and can prove nothing; targets that keep an external id
        should override it."""
        remote_id = self.find_user(account.user_name)
        return None if remote_id is None else RemoteMatch(remote_id, ours=False)

    @abstractmethod
    def update_user(
        self, remote_id: str, account: Account, previous: Mapping[str, Any] | None
    ) -> None:
        """Make the remote account match ``account`` (``previous``: the attributes last
        sent, to send only differences). Idempotent. RemoteNotFound if it is gone."""

    def rename_user(
        self,
        remote_id: str,
        account: Account,
        previous_user_name: str,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        """Give the remote account ``account``'s user name (it was sent as
        ``previous_user_name``, with attributes ``previous``) and make it match
        ``account``. Idempotent. RemoteNotFound if it is gone. The default sends the
        whole account (:meth:`update_user` without ``previous``): enough for targets
        whose every update carries the user name."""
        self.update_user(remote_id, account, None)

    @abstractmethod
    def delete_user(self, remote_id: str) -> None:
        """Delete the account. Idempotent: an account already gone is not an error."""

    def disable_user(self, remote_id: str, account: Account) -> bool | None:
        """Deactivate the account, keeping it. Idempotent. False when the target had
        it deactivated already (an administrator did): idprov then records no
        deactivation of its own, and never re-enables the account. None or True: this
        call deactivated it (or could not tell)."""
        self.update_user(
            remote_id,
            Account(account.local_id, account.user_name, account.attributes, active=False),
            None,
        )
        return None

    @abstractmethod
    def create_group(self, group: GroupSpec) -> str:
        """Create the group with its initial members; return its remote id."""

    def group_target(self, display_name: str) -> str | None:
        """What the configuration maps the role ``display_name`` to at the target, when
        the group is not the role's own but one the options name (a Salesforce
        permission set: ``permission_set Sales_Ops``); None where idprov makes the group
        (the default). The ledger records it with the group: when the configuration
        maps the role elsewhere, idprov moves the members idprov put in the old one to
        the new one (the removals judged by the deletion guard). No call to the target."""
        return None

    @abstractmethod
    def find_group(self, display_name: str) -> str | None:
        """The remote id of the group with this name, or None. Read-only."""

    def lookup_group(self, group: GroupSpec) -> RemoteMatch | None:
        """As :meth:`lookup_user`, for a group (by display name)."""
        remote_id = self.find_group(group.display_name)
        return None if remote_id is None else RemoteMatch(remote_id, ours=False)

    @abstractmethod
    def rename_group(self, remote_id: str, display_name: str) -> None:
        """Set the group's display name. Idempotent."""

    @abstractmethod
    def delete_group(self, remote_id: str) -> None:
        """Delete the group. Idempotent."""

    @abstractmethod
    def change_members(self, remote_id: str, add: Sequence[str], remove: Sequence[str]) -> None:
        """Add and remove members (remote user ids). Idempotent. A connector that makes
        the changes in several requests (one per member, or per collection) and fails
        part way raises a :class:`TargetError` whose ``members_done`` names the changes
        the target acknowledged (and ``partial``): the engine records those members as
        put in (or taken out) whatever else failed, so that a later unassign or role
        delete removes them, and a repeat sends only the rest. Without it, the engine
        takes none of the changes as done, and an added member that the target kept
        would be left there when the role goes."""

    def read_user(self, remote_id: str) -> dict[str, Any] | None:
        """The remote account as the target returns it, or None if it is gone."""
        raise NotImplementedError

    def drift(self, remote: dict[str, Any], account: Account) -> list[str]:
        """Attributes of ``account`` (what was sent) that ``remote`` no longer matches,
        and those of :meth:`unset` that ``remote`` holds a value in (an administrator
        added it, or the target kept what idprov removed): idprov manages what it maps,
        value or none. An attribute the mapping does not give is never drift."""
        return []

    def managed_attributes(self) -> tuple[str, ...]:
        """The target attribute paths idprov manages here: its mapping's (this
        connector's defaults under the IdP's ``attributes``), less those mapped to
        null and those the connector never sends in an update (:meth:`held_back`)."""
        held = self.held_back(self.options)
        mapping = {**self.default_attributes_for(self.options), **self.idp.attributes}
        return tuple(
            path
            for path, template in mapping.items()
            if template is not None and path.casefold() not in held
        )

    def unset(self, account: Account) -> list[str]:
        """The paths of :meth:`managed_attributes` that ``account`` (what idprov sent)
        holds no value in: the target should hold none there either."""
        have = {path.casefold() for path, value in account.attributes.items() if value is not None}
        return [path for path in self.managed_attributes() if path.casefold() not in have]

    def list_users(self) -> list[tuple[str, str]]:
        """(remote id, user name) of every account at the target (paged). Read-only."""
        raise NotImplementedError

    def read_group(self, remote_id: str) -> tuple[str, Container[str]] | None:
        """(display name, remote ids of the members) of the group, or None if it is
        gone. Read-only; ``NotImplementedError`` where the target cannot tell. The
        members need only answer ``in`` (a target that never lists them may ask)."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the connector holds (not the shared HTTP client)."""
