"""Password hashing: salted scrypt PHC strings, and passlib's pbkdf2-sha256 for migrations."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from idprov.userstores.passwords import hash_password, is_supported_hash, verify_password

PHC_SCRYPT = re.compile(r"^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def ab64(data: bytes) -> str:
    """passlib's base64: '.' for '+', no padding."""
    return b64(data).replace("+", ".")


def test_hash_is_a_phc_scrypt_string():
    encoded = hash_password("correct horse")
    m = PHC_SCRYPT.match(encoded)
    assert m, encoded
    ln, r, p = (int(x) for x in m.group(1, 2, 3))
    assert (ln, r, p) == (14, 8, 1)
    salt = base64.b64decode(m.group(4) + "==")
    digest = base64.b64decode(m.group(5) + "=")
    assert len(salt) == 16 and len(digest) == 32
    expected = hashlib.scrypt(b"correct horse", salt=salt, n=2**ln, r=r, p=p, dklen=32)
    assert digest == expected
    assert "correct" not in encoded


def test_verify():
    encoded = hash_password("s3cret-Pass")
    assert verify_password("s3cret-Pass", encoded)
    for wrong in ("s3cret-pass", "s3cret-Pass ", "", "s3cret-Pas"):
        assert not verify_password(wrong, encoded)


def test_every_hash_has_its_own_salt():
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert verify_password("same", first) and verify_password("same", second)


def test_unicode_passwords():
    encoded = hash_password("pässwörd-日本")
    assert verify_password("pässwörd-日本", encoded)
    assert not verify_password("passwort-日本", encoded)


def test_old_parameters_still_verify():
    """Hashes carry their parameters, so raising them later breaks no stored hash."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"legacy", salt=salt, n=2**10, r=4, p=2, dklen=24)
    encoded = f"$scrypt$ln=10,r=4,p=2${b64(salt)}${b64(digest)}"
    assert is_supported_hash(encoded)
    assert verify_password("legacy", encoded)
    assert not verify_password("legacy!", encoded)


def test_passlib_pbkdf2_sha256_hashes_verify():
    salt = bytes(range(12)) + b"\xfb\xef\xbe\xff"  # base64 with '+' and '/'
    digest = hashlib.pbkdf2_hmac("sha256", b"migrated-pw", salt, 29000, dklen=32)
    encoded = f"$pbkdf2-sha256$29000${ab64(salt)}${ab64(digest)}"
    assert is_supported_hash(encoded)
    assert verify_password("migrated-pw", encoded)
    assert not verify_password("migrated-PW", encoded)


@pytest.mark.parametrize(
    "encoded",
    [
        None,
        "",
        "plaintext-password",
        "$scrypt$ln=14,r=8,p=1$onlysalt",
        "$2b$12$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
        "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
    ],
)
def test_unknown_or_malformed_hashes_never_verify(encoded):
    assert not verify_password("plaintext-password", encoded)
    if encoded:
        assert not is_supported_hash(encoded)
