"""Password hashing: salted scrypt in a PHC string, verified in constant time.

New hashes are ``$scrypt$ln=14,r=8,p=1$<salt>$<hash>`` (base64 without padding),
the parameters stored with the hash so they can be raised later without breaking
old ones. ``$pbkdf2-sha256$`` hashes (passlib's format) are verified too, so users
migrated from other systems keep their passwords.

LDAP directories keep RFC 2307 ``userPassword`` values: ``{SSHA}`` (salted SHA-1, what
slapd itself writes by default), ``{SSHA256}``/``{SSHA384}``/``{SSHA512}`` and the
unsalted ``{SHA}`` family. :func:`hash_ssha` makes ``{SSHA}`` values for LDAP
userstores, since a directory can only check a bind against a scheme it knows;
:func:`verify_password` checks all of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

SCRYPT_LN = 14
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT = re.compile(r"^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/.]+)\$([A-Za-z0-9+/.]+)$")
_PBKDF2 = re.compile(r"^\$pbkdf2-sha256\$(\d+)\$([A-Za-z0-9+/.]+)\$([A-Za-z0-9+/.]+)$")
_RFC2307 = re.compile(r"^\{(S?SHA(?:256|384|512)?)\}([A-Za-z0-9+/]+=*)$", re.IGNORECASE)
_SHA_DIGESTS = {"sha": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str, alt: bool = False) -> bytes:
    if alt:  # passlib's "ab64": '.' instead of '+'
        text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` (about 50 ms of one core)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=2**SCRYPT_LN,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=2**26,
        dklen=32,
    )
    return f"$scrypt$ln={SCRYPT_LN},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def hash_ssha(password: str) -> str:
    """A new RFC 2307 ``{SSHA}`` value (SHA-1 of password and an 8-byte salt, then the
    salt, in base64), the form OpenLDAP writes and checks binds against."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def hash_with(scheme: str, password: str) -> str:
    """A new hash in ``scheme``: ``scrypt`` (idprov's own) or ``ssha`` (RFC 2307
    ``{SSHA}``, what an LDAP directory checks binds with)."""
    if scheme == "ssha":
        return hash_ssha(password)
    return hash_password(password)


def is_supported_hash(encoded: str) -> bool:
    """Whether ``encoded`` is a hash format :func:`verify_password` understands."""
    return bool(_SCRYPT.match(encoded) or _PBKDF2.match(encoded) or _RFC2307.match(encoded))


def _verify_rfc2307(password: str, scheme: str, payload: str) -> bool:
    """``{SHA*}`` is a bare digest; ``{SSHA*}`` a digest followed by its salt."""
    scheme = scheme.lower()
    salted = scheme.startswith("ssha")
    algorithm = _SHA_DIGESTS[scheme[1:] if salted else scheme]
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        return False
    size = hashlib.new(algorithm).digest_size
    expected, salt = raw[:size], raw[size:]
    if len(expected) != size or salted != bool(salt):
        return False
    digest = hashlib.new(algorithm, password.encode() + salt).digest()
    return hmac.compare_digest(digest, expected)


def verify_password(password: str, encoded: str | None) -> bool:
    """True when ``password`` matches ``encoded``; constant time in the digest."""
    if not encoded:
        return False
    if m := _SCRYPT.match(encoded):
        ln, r, p = (int(x) for x in m.group(1, 2, 3))
        expected = _unb64(m.group(5))
        digest = hashlib.scrypt(
            password.encode(),
            salt=_unb64(m.group(4)),
            n=2**ln,
            r=r,
            p=p,
            maxmem=2**27,
            dklen=len(expected),
        )
        return hmac.compare_digest(digest, expected)
    if m := _PBKDF2.match(encoded):
        expected = _unb64(m.group(3), alt=True)
        digest = hashlib.pbkdf2_hmac(
            "sha256",
            password.encode(),
            _unb64(m.group(2), alt=True),
            int(m.group(1)),
            dklen=len(expected),
        )
        return hmac.compare_digest(digest, expected)
    if m := _RFC2307.match(encoded):
        return _verify_rfc2307(password, m.group(1), m.group(2))
    return False
