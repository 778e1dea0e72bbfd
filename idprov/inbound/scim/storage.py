"""scim2-server's storage contract over idprov's core service: SCIM Users are idprov
users, SCIM Groups are roles, and every write is a call of
:class:`~idprov.provisioning.service.IdentityService` (policy, audit, outbox, and the
outbound push to the acting application's identity providers before it returns).

Each request runs on one thread with the :class:`~.acting.Backend` of its
application (:mod:`.acting` says which, and turns idprov's errors into SCIM's). The
server runs every write request on a single writer thread (see
:mod:`idprov.inbound.scim_server`), so a PATCH's read, apply and write are not
interleaved with another write.

Names are relative to the application's userstore: a user there is ``alice``, one in
another domain ``DOMAIN/alice`` (and ``PRIMARY/alice`` when the application's
userstore is not PRIMARY). ``externalId`` is kept per application in table
``inbound_external_ids`` of idprov's state database.

Filters, sorting and paging are evaluated by scim2-models on the documents; a filter
that starts with ``userName``, ``id``, ``externalId`` or ``displayName`` ``eq`` a
value looks that one up, a plain listing reads one page, and any other filter on
Users is handed to the userstores as a condition they check themselves (indexed SQL,
LDAP filters: :mod:`.filters`), so only the users that may match are read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union, cast

from scim2_models import (
    NotFoundException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimFilter,
    ScimProvider,
    SearchRequest,
)
from scim2_models.path import CompareOperator, Comparison, LogicalExpr, LogicalOperator
from scim2_server.storage import ScimStorage, SearchPage
from scim2_server.utils import parametrize

from idprov.inbound.scim import mapping
from idprov.inbound.scim.acting import Backend, current_request, scim_errors
from idprov.inbound.scim.filters import (
    check_filter,
    trimmed_literals,
    user_condition,
    zoned_times,
)
from idprov.inbound.scim.lookups import (
    GROUPS,
    USERS,
    by_name,
    external_lookup,
    find_role,
    find_user,
    in_known_domain,
    label,
    list_roles,
    list_users,
    manager_claim,
    managers_of,
    member_names,
    parse_name,
)
from idprov.model import QualifiedName, Role, User, UserQuery
from idprov.userstores.policy import same_claim

if TYPE_CHECKING:
    from idprov.provisioning.unit_of_work import UnitOfWork

MAX_OFFSET = 2**62
"""Past any store's row count, and within every database's integers."""
KINDS = {USERS: "user", GROUPS: "role"}


# ---------------------------------------------------------------- the storage
class IdprovStorage(ScimStorage):
    """Users and Groups of every userstore, as the acting application sees them."""

    def __init__(self, provider: ScimProvider) -> None:
        self.models = {rt.name: provider.model_for(rt) for rt in provider.resource_types}

    def operation(self) -> Any:
        return scim_errors()

    # -- reads
    def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        with scim_errors():
            kind = _kind(resource_type)
            return self._model(kind, self._document(kind, resource_id))

    def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        with scim_errors():
            names = list(dict.fromkeys(str(rt.name) for rt in resource_types))
            if search_request.filter is not None:
                check_filter(search_request.filter.ast)
                search_request = _spelled_search(search_request, names == [USERS])
            quick = self._listing_page(names, search_request)
            if quick is not None:
                return quick
            docs, exact = self._candidates(names, search_request.filter)
            found = [self._model(d["meta"]["resourceType"], d) for d in docs]
            scim_filter = self._bound_filter(search_request.filter, found)
            if scim_filter is not None and not exact:
                found = [r for r in found if scim_filter.match(r)]
            return _page(search_request, found)

    def _model(self, name: str, doc: dict[str, Any]) -> Resource[Any]:
        model = cast(type[Resource[Any]], self.models[name])
        return model.model_validate(doc)

    def _document(self, kind: str, resource_id: str) -> dict[str, Any]:
        backend = current_request().backend
        if kind == USERS:
            user = find_user(backend, resource_id)
            if user is not None:
                return self._user_documents(backend, [user])[0]
        else:
            role = find_role(backend, resource_id)
            if role is not None:
                return self._group_documents(backend, [role])[0]
        raise NotFoundException(detail=f"no {kind} with id {resource_id!r}")

    def _user_documents(
        self, backend: Backend, users: Sequence[User], external: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The SCIM documents of ``users`` (``external``: their externalIds by user id,
        when the caller knows them: a user it just created)."""
        roles = list_roles(backend) if any(u.roles for u in users) else []
        role_ids = {r.qualified_name.casefold(): r for r in roles}
        if external is None:
            ids = [u.id for u in users]
            external = backend.external_ids.get_many(backend.application, "user", ids)
        managers = managers_of(backend, users)
        docs = []
        for user in users:
            groups = []
            for name in user.roles:
                role = role_ids.get(str(QualifiedName(user.domain, name)).casefold())
                if role is not None:
                    groups.append((role.id, label(role.domain, role.name, backend.domain)))
            shown = label(user.domain, user.username, backend.domain)
            manager = managers.get(user.id)
            if not backend.service.store(user.domain).keeps_claim("active"):
                user = dataclasses.replace(user, claims={**user.claims, "active": "true"})
            doc = mapping.user_document(user, shown, external.get(user.id), groups, manager)
            docs.append(mapping.with_meta(doc, USERS, user.created, user.modified))
        return docs

    def _group_documents(self, backend: Backend, roles: Sequence[Role]) -> list[dict[str, Any]]:
        external = backend.external_ids.get_many(backend.application, "role", [r.id for r in roles])
        docs = []
        for role in roles:
            members = backend.service.store(role.domain).role_member_ids(role.id)
            shown = label(role.domain, role.name, backend.domain)
            doc = mapping.group_document(role, shown, members, external.get(role.id))
            docs.append(mapping.with_meta(doc, GROUPS, role.created, role.modified))
        return docs

    def _listing_page(self, names: list[str], request: SearchRequest[Any]) -> SearchPage | None:
        """A page of users read as one page from the userstores, when nothing filters
        or sorts them (the usual "list everything" of a client)."""
        if names != [USERS] or request.filter is not None or request.sort_by is not None:
            return None
        backend = current_request().backend
        start = min(request.start_index_0 or 0, MAX_OFFSET)
        page = list_users(backend, UserQuery(limit=request.count, offset=start))
        docs = self._user_documents(backend, page.items)
        return SearchPage(page.total, [self._model(USERS, d) for d in docs])

    def _candidates(self, names: list[str], scim_filter: Any) -> tuple[list[dict[str, Any]], bool]:
        """The documents that may match, and whether they are exactly the filter's answer:
        a filter that is one ``eq`` looked up in every resource type. A name is then found
        as uniqueness compares names (case folded: ``STRAUSS`` finds ``strauß``, which a
        create of ``STRAUSS`` would collide with), where scim2-models' exact check would
        drop it, and a client that matches by name before it creates would never match."""
        backend = current_request().backend
        lookup = _equality(scim_filter)
        docs: list[dict[str, Any]] = []
        exact = isinstance(getattr(scim_filter, "ast", None), Comparison)
        for name in names:
            if lookup is not None and lookup[0] in LOOKUPS[name]:
                users, roles = self._looked_up(backend, name, *lookup)
            else:
                users, roles = self._everything(backend, name, scim_filter)
                exact = False
            docs += self._user_documents(backend, users) if users else []
            docs += self._group_documents(backend, roles) if roles else []
        return docs, exact

    def _looked_up(
        self, backend: Backend, kind: str, attribute: str, value: str
    ) -> tuple[list[User], list[Role]]:
        if attribute == "id":
            user = find_user(backend, value) if kind == USERS else None
            role = find_role(backend, value) if kind == GROUPS else None
            return ([user] if user else []), ([role] if role else [])
        if attribute == "externalid":
            ids = backend.external_ids.find(backend.application, KINDS[kind], value)
            if kind == USERS:
                return [u for i in ids if (u := find_user(backend, i))], []
            return [], [r for i in ids if (r := find_role(backend, i))]
        found = by_name(backend, kind, attribute, QualifiedName.parse(value, backend.domain))
        if isinstance(found, User):
            return [found], []
        return [], [found] if isinstance(found, Role) else []

    def _everything(
        self, backend: Backend, kind: str, scim_filter: Any
    ) -> tuple[list[User], list[Role]]:
        """Every user the stores find for the filter (see :mod:`.filters`), or role."""
        if kind == USERS:
            where = None
            if scim_filter is not None:
                others = [d for d in backend.domains if d.casefold() != backend.domain.casefold()]
                where = user_condition(scim_filter.ast, external_lookup(backend), others)
            return list_users(backend, UserQuery(limit=None, where=where)).items, []
        return [], list_roles(backend)

    @staticmethod
    def _bound_filter(scim_filter: Any, found: list[Resource[Any]]) -> Any:
        """The filter, bound to the models of ``found`` when it is not (root searches)."""
        if scim_filter is None or scim_filter.models or not found:
            return scim_filter
        models = tuple(dict.fromkeys(type(r) for r in found))
        return parametrize(ScimFilter, Union[models])(str(scim_filter))  # noqa: UP007

    # -- writes
    def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        if _kind(resource_type) == USERS:
            return self._model(USERS, self.create_user_document(resource))
        with scim_errors():
            group = self._create_group(mapping.read_group(resource.model_dump()))
            return self.get(resource_type, group)

    def create_user_document(self, resource: Resource[Any]) -> dict[str, Any]:
        """Create the user a validated User resource describes; returns its document
        as stored (with ``meta``, without a location), from what was written: no
        second read."""
        with scim_errors():
            given = mapping.read_user(resource.model_dump())
            user = self._create_user(given)
            external = {user.id: given.external_id} if given.external_id else {}
            [created] = self._user_documents(current_request().backend, [user], external)
            return created

    def _create_user(self, given: mapping.UserInput) -> User:
        state = current_request()
        backend = state.backend
        name = in_known_domain(backend, given.user_name, "userName")
        claims = {"active": "true", **given.claims, **manager_claim(backend, given, name.domain)}
        _without_active(backend, name.domain, claims)
        with state.changing() as uow:
            result = uow.add_user(name.name, claims, given.password, domain=name.domain)
            user = cast(User, result.entity)
            if given.external_id:
                uow.set_external_id(backend.application, "user", user.id, given.external_id)
        return user

    def _create_group(self, given: mapping.GroupInput) -> str:
        state = current_request()
        backend = state.backend
        name = in_known_domain(backend, given.display_name, "displayName")
        members = member_names(backend, name.domain, given.member_ids)
        with state.changing() as uow:
            role = cast(Role, uow.add_role(name.name, name.domain).entity)
            if members:
                uow.assign(name.name, members, name.domain)
            if given.external_id:
                uow.set_external_id(backend.application, "role", role.id, given.external_id)
        return role.id

    def update(
        self,
        resource_type: ResourceType,
        resource: Resource[Any],
        *,
        expected_version: str | None = None,
    ) -> Resource[Any]:
        with scim_errors():
            resource_id = cast(str, resource.id)
            current = self._document(_kind(resource_type), resource_id)
            _check_version(current, expected_version)
            doc = resource.model_dump()
            version = current["meta"]["version"]
            if _kind(resource_type) == USERS:
                self._update_user(resource_id, mapping.read_user(doc), version)
            else:
                self._update_group(resource_id, current, mapping.read_group(doc), version)
            return self.get(resource_type, resource_id)

    def _unchanged_since(
        self, uow: UnitOfWork, kind: str, entity: User | Role, version: str
    ) -> None:
        """At the start of a change's transaction: hold ``entity`` (a store with row
        locks keeps other servers' writes to it out until the commit) and check that
        it is still the ``version`` this request was applied to. Otherwise another
        request changed it in between (on another `idprov serve` sharing the store):
        412, and nothing is written, rather than one of the two changes lost."""
        if isinstance(entity, User):
            uow.lock_user(entity.username, entity.domain)
        else:
            uow.lock_role(entity.name, entity.domain)
        if self._document(kind, entity.id)["meta"]["version"] != version:
            raise PreconditionFailedException(
                detail="another request changed the resource while this one was applied; "
                "read it again and send the change again"
            )

    def _update_user(self, user_id: str, given: mapping.UserInput, version: str) -> None:
        state = current_request()
        backend = state.backend
        user = cast(User, find_user(backend, user_id))
        name = parse_name(backend, given.user_name, "userName")
        if name.domain.casefold() != user.domain.casefold():
            raise mapping.InvalidValue("userName cannot move a user to another userstore domain")
        wanted = {**given.claims, **manager_claim(backend, given, user.domain)}
        _without_active(backend, user.domain, wanted)
        # a value kept with other spacing (from before idprov trimmed) is kept: the
        # request did not change it (a PATCH rebuilds every claim from the document)
        changed = {k: v for k, v in wanted.items() if not same_claim(user.claims.get(k), v)}
        unset = sorted(c for c in mapping.MAPPED_CLAIMS if c in user.claims and c not in wanted)
        current = backend.external_ids.get_many(backend.application, "user", [user.id])
        with state.changing() as uow:
            self._unchanged_since(uow, USERS, user, version)
            if name.name != user.username:
                uow.rename_user(user.username, name.name, user.domain)
            if changed or unset:
                uow.update_user(name.name, changed, unset, user.domain)
            if given.password is not None:
                uow.set_password(name.name, given.password, user.domain)
            if current.get(user.id) != given.external_id:
                uow.set_external_id(backend.application, "user", user.id, given.external_id)

    def _update_group(
        self, role_id: str, current: dict[str, Any], given: mapping.GroupInput, version: str
    ) -> None:
        state = current_request()
        backend, service = state.backend, state.backend.service
        role = cast(Role, find_role(backend, role_id))
        name = parse_name(backend, given.display_name, "displayName")
        if name.domain.casefold() != role.domain.casefold():
            raise mapping.InvalidValue("a Group cannot move to another userstore domain")
        members = member_names(backend, role.domain, given.member_ids)
        held = {m["value"] for m in current.get("members", [])}
        wanted = set(given.member_ids)
        by_id = dict(zip(given.member_ids, members, strict=True))
        gone = service.store(role.domain).find_users_by_id(sorted(held - wanted))
        external = backend.external_ids.get_many(backend.application, "role", [role.id])
        with state.changing() as uow:
            self._unchanged_since(uow, GROUPS, role, version)
            if name.name != role.name:
                uow.rename_role(role.name, name.name, role.domain)
            if wanted - held:
                added = [by_id[i] for i in given.member_ids if i not in held]
                uow.assign(name.name, added, role.domain)
            if gone:
                uow.unassign(name.name, [u.username for u in gone.values()], role.domain)
            if external.get(role.id) != given.external_id:
                uow.set_external_id(backend.application, "role", role.id, given.external_id)

    def delete(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        expected_version: str | None = None,
    ) -> None:
        with scim_errors():
            state = current_request()
            backend = state.backend
            kind = _kind(resource_type)
            current = self._document(kind, resource_id)
            _check_version(current, expected_version)
            version = current["meta"]["version"]
            with state.changing() as uow:
                if kind == USERS:
                    user = cast(User, find_user(backend, resource_id))
                    self._unchanged_since(uow, kind, user, version)
                    uow.delete_user(user.username, user.domain)
                else:
                    role = cast(Role, find_role(backend, resource_id))
                    self._unchanged_since(uow, kind, role, version)
                    uow.delete_role(role.name, role.domain)
                uow.forget_external_ids(KINDS[_kind(resource_type)], resource_id)


# ---------------------------------------------------------------- helpers
def _without_active(backend: Backend, domain: str, claims: dict[str, Any]) -> None:
    """A userstore that keeps no ``active`` claim (a directory that maps none) holds
    active users only: ``active: true``, which Entra and Okta send with every user, is
    what it holds already and is dropped; ``false`` cannot be kept, and is refused."""
    if backend.service.store(domain).keeps_claim("active"):
        return
    if claims.pop("active", "true") != "true":
        raise mapping.InvalidValue(
            f"active: the {domain} userstore keeps no 'active' claim, so idprov cannot "
            "disable this user there; map it under userstores[].claim_attributes (an "
            "attribute the directory's applications read), or delete the user"
        )


def _spelled_search(request: SearchRequest[Any], users: bool) -> SearchRequest[Any]:
    """A search comparing times in UTC where the filter gives none
    (:func:`~idprov.inbound.scim.filters.zoned_times`) and, of Users (``users``),
    trimmed values where idprov keeps the attribute trimmed (``title eq " CTO "``
    finds the user whose title is ``CTO``, as a PATCH path's filter does:
    :func:`~idprov.inbound.scim.filters.trimmed_literals`)."""
    scim_filter = cast(Any, request.filter)
    ast = zoned_times(scim_filter.ast)
    spelled = str(trimmed_literals(ast) if users else ast)
    if spelled == str(scim_filter.ast):
        return request
    return request.model_copy(update={"filter": type(scim_filter)(spelled)})


def _kind(resource_type: ResourceType) -> str:
    return USERS if resource_type.name == USERS else GROUPS


def _check_version(document: dict[str, Any], expected: str | None) -> None:
    if expected is not None and document["meta"]["version"] != expected:
        raise PreconditionFailedException(
            detail="the resource is no longer the version this request was made against "
            "(If-Match, or another request changed it meanwhile): read it again"
        )


LOOKUPS = {USERS: {"username", "id", "externalid"}, GROUPS: {"displayname", "id", "externalid"}}
"""Attributes whose ``eq`` a search looks up instead of reading everything."""


def _equality(scim_filter: Any) -> tuple[str, str] | None:
    """(attribute, value) of a filter that is, or is an ``and`` of, ``ATTR eq "value"``
    on a top-level attribute."""
    if scim_filter is None:
        return None
    node = scim_filter.ast
    is_and = isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_
    for term in node.terms if is_and else [node]:
        if (
            isinstance(term, Comparison)
            and term.op == CompareOperator.eq
            and isinstance(term.value, str)
            and term.attr_path.sub_attr is None
        ):
            return term.attr_path.attr.casefold(), term.value
    return None


def _page(request: SearchRequest[Any], found: list[Resource[Any]]) -> SearchPage:
    """Sort (missing values last, then by id) and cut the page a search asks for."""
    descending = (
        request.sort_by is not None and request.sort_order == SearchRequest.SortOrder.descending
    )

    def key(resource: Resource[Any]) -> tuple[bool, Any, str]:
        value = request.sort_value(resource) if request.sort_by is not None else None
        return value is None, value if value is not None else "", cast(str, resource.id)

    ordered = sorted(found, key=key, reverse=descending)
    start = request.start_index_0 or 0
    stop = None if request.count is None else start + request.count
    return SearchPage(len(ordered), ordered[start:stop])
