"""Other JSON encoders and percent-encoders spell a secret their own way (PHP's ``\\/``,
.NET's ``\\u002B``, Jackson's upper-case ``\\u00E4``, lower-case ``%2b``): each is
blanked. And a password with no run of 4 letters or digits (``Xy!7#kQ2$m9&``, as
generated) is looked up by an error holding it, not by every error."""

from __future__ import annotations

import json
import random
import string

import pytest

from idprov import secrecy
from idprov.connectors.base import TargetError

BASE64ISH = "q8Z+k/3xY9w=Lm4"


class Holder:
    pass


@pytest.mark.parametrize(
    ("secret", "echoed"),
    [
        (BASE64ISH, '{"error":"bad client_secret \\"q8Z+k\\/3xY9w=Lm4\\""}'),  # PHP json_encode
        (BASE64ISH, '{"detail":"refused q8Z\\u002Bk/3xY9w=Lm4"}'),  # System.Text.Json
        ("P\u00e4sswort-99x", '{"detail":"P\\u00E4sswort-99x"}'),  # Jackson, .NET
        (BASE64ISH, "body was client_secret=q8Z%2bk%2f3xY9w%3dLm4"),  # lower-case percent
        (BASE64ISH, "body was client_secret=q8Z%2bk/3xY9w%3dLm4"),
        ('Pa"ss<word>-2024', '{"detail":"Pa\\u0022ss\\u003Cword\\u003E-2024"}'),  # .NET
    ],
)
def test_a_secret_as_other_encoders_spell_it_is_blanked(secret, echoed):
    owner = Holder()
    secrecy.hold(owner, secret)
    message = TargetError(f"HTTP 400: {echoed}").message
    assert "3xY9w" not in message and "sswort" not in message and "word" not in message
    assert "***" in message
    del owner


def test_the_spellings_of_a_plain_secret_stay_one():
    """The extra encoders add spellings only for secrets holding what they escape."""
    assert secrecy.spellings("PlainSecret2024") == {"PlainSecret2024"}
    assert len(secrecy.spellings(BASE64ISH)) <= 8


def test_passwords_without_a_run_of_4_letters_or_digits_are_not_looked_at_by_every_error(
    monkeypatch,
):
    """20,000 such passwords held (a large import): each error computed the spellings of
    every one whose 2-3 character run its text held (23 ms an error); now only those
    a spelling of which begins in the text."""
    monkeypatch.setattr(secrecy, "_held", {})
    monkeypatch.setattr(secrecy, "_index", {})
    monkeypatch.setattr(secrecy, "_always", set())
    draw = random.Random(7)
    holders = [Holder() for _ in range(2000)]
    for holder in holders:  # 'Xy!7#kQ2$m9&': three runs of 2 letters or digits
        runs = ["".join(draw.choices(string.ascii_letters + string.digits, k=2)) for _ in "abcd"]
        secrecy.hold(holder, "".join(run + draw.choice("!#$&*") for run in runs))
    secrecy.hold(holders[0], "Ab!7#kQ2$m9&")
    assert not secrecy._always
    computed = []
    spellings = secrecy.spellings
    monkeypatch.setattr(secrecy, "spellings", lambda s: computed.append(s) or spellings(s))
    text = "HTTP 400: " + json.dumps({"detail": "user k9 of group Xy: value kQ2 m9 invalid"})
    assert secrecy.blank(text) == text
    assert computed == []
    echoed = 'HTTP 400: {"password": "Ab!7#kQ2$m9\\u0026"}'
    assert secrecy.blank(echoed) == 'HTTP 400: {"password": "***"}'
    assert secrecy.blank("form: password=Ab%217%23kQ2%24m9%26") == "form: password=***"
