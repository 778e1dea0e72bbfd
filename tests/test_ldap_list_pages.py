"""A page of an LDAP listing (`user list --limit N`) reads whole only the entries it
shows (the others for their names alone: a page of 50 of 10,000 users read them all
whole), and still names the names of the page that several entries hold, wherever
the others are: on another page, or out of the listing's filter. Against a real slapd."""

from __future__ import annotations

import pytest

from idprov.model import UserQuery
from idprov.userstores.ldap_escape import Entry
from tests.test_userstore_ldap import open_store, store  # noqa: F401 - the fixtures


@pytest.fixture
def crowd(slapd, store):  # noqa: F811 - the fixture imported above
    """Twelve people u00..u11; a second ``U03`` under ou=contractors (its mail another);
    u03 and u05 in the group ``staff``."""
    ldif = "".join(
        f"dn: uid=u{i:02d},{slapd.people}\nobjectClass: inetOrgPerson\nuid: u{i:02d}\n"
        f"cn: u{i:02d}\nsn: u{i:02d}\nmail: u{i:02d}@example.com\n\n"
        for i in range(12)
    )
    ldif += (
        f"dn: ou=contractors,{slapd.people}\nobjectClass: organizationalUnit\nou: contractors\n\n"
    )
    ldif += (
        f"dn: uid=U03,ou=contractors,{slapd.people}\nobjectClass: inetOrgPerson\nuid: U03\n"
        f"cn: U03\nsn: U03\nmail: contractor@example.com\n\n"
    )
    ldif += (
        f"dn: cn=staff,{slapd.groups}\nobjectClass: groupOfNames\ncn: staff\n"
        f"member: uid=u03,{slapd.people}\nmember: uid=u05,{slapd.people}\n\n"
    )
    slapd.add(ldif)
    return store


@pytest.fixture
def read_whole(monkeypatch) -> list[str]:
    """The DNs of the entries read with their mail (whole), as the directory answered."""
    read: list[str] = []
    decoded = Entry.decoded.__func__  # type: ignore[attr-defined]

    def recording(cls, dn, attributes):
        if "mail" in attributes:
            read.append(dn)
        return decoded(cls, dn, attributes)

    monkeypatch.setattr(Entry, "decoded", classmethod(recording))
    return read


def test_a_page_reads_whole_only_the_entries_it_shows(crowd, read_whole):
    page = crowd.list_users(UserQuery(limit=3, offset=2))
    assert [u.username for u in page.items] == ["u02", "U03", "u03"] and page.total == 13
    assert all(u.claims["email"] for u in page.items)
    assert len(read_whole) == 3, read_whole


def test_a_page_names_a_name_whose_other_entry_is_on_the_next_page(slapd, crowd):
    page = crowd.list_users(UserQuery(limit=2, offset=2))
    assert [u.username for u in page.items] == ["u02", "U03"]
    (ambiguous,) = crowd.ambiguous_names()
    assert sorted(ambiguous.entries) == sorted(
        [f"uid=u03,{slapd.people}", f"uid=U03,ou=contractors,{slapd.people}"]
    )
    assert crowd.list_users(UserQuery(limit=2, offset=0)).total == 13
    assert crowd.ambiguous_names() == []


@pytest.mark.parametrize(
    "query",
    [
        UserQuery(claims={"email": "u03@example.com"}, limit=5),
        UserQuery(role="staff", limit=5),
    ],
    ids=["claim", "role"],
)
def test_a_filtered_page_names_a_name_whose_other_entry_the_filter_leaves_out(
    slapd, crowd, query, read_whole
):
    page = crowd.list_users(query)
    shown = [u.username for u in page.items]
    assert "u03" in shown and "U03" not in shown
    (ambiguous,) = crowd.ambiguous_names()
    assert ambiguous.username.casefold() == "u03" and len(ambiguous.entries) == 2
    assert len(read_whole) <= len(shown) + 1  # the page's own, and U03's to name it


def test_a_page_whose_user_has_no_name_to_look_up_still_shows_it(slapd, store):  # noqa: F811
    """An entry without a uid (named by its cn) is read at its DN, not dropped."""
    slapd.add(
        f"dn: cn=nameless,{slapd.people}\nobjectClass: inetOrgPerson\ncn: nameless\n"
        f"sn: nameless\nmail: nameless@example.com\n\n"
    )
    page = store.list_users(UserQuery(limit=5))
    assert [u.claims.get("email") for u in page.items] == ["nameless@example.com"]


def test_entries_without_a_name_are_no_ambiguous_name_whole_or_paged(slapd, crowd):
    """Two entries without a uid: a whole listing (`user list --limit 0`) named them an
    ambiguous name '' (a page did not); both list them as they are, and name only the
    names several entries hold (u03)."""
    slapd.add(
        "".join(
            f"dn: cn=nameless{i},{slapd.people}\nobjectClass: inetOrgPerson\ncn: nameless{i}\n"
            f"sn: nameless{i}\nmail: nameless{i}@example.com\n\n"
            for i in (1, 2)
        )
    )
    whole = crowd.list_users(UserQuery(limit=None))
    whole_ambiguous = [a.username.casefold() for a in crowd.ambiguous_names()]
    paged = crowd.list_users(UserQuery(limit=50))
    paged_ambiguous = [a.username.casefold() for a in crowd.ambiguous_names()]
    assert whole_ambiguous == paged_ambiguous == ["u03"]
    assert [u.id for u in whole.items] == [u.id for u in paged.items]
    nameless = [u.claims.get("email") for u in whole.items if not u.username]
    assert sorted(nameless) == ["nameless1@example.com", "nameless2@example.com"]
    # a sync reads every user: the nameless ones name no user to provision, nor an ambiguity
    users = [u for batch in crowd.iter_users() for u in batch]
    assert all(u.username for u in users)
    assert [a.username.casefold() for a in crowd.ambiguous_names()] == ["u03"]
