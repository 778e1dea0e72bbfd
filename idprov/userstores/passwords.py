"""Password hashing: salted scrypt in a PHC string, verified in constant time.

New hashes are ``$scrypt$ln=14,r=8,p=1$<salt>$<hash>`` (base64 without padding),
the parameters stored with the hash so they can be raised later without breaking
old ones. ``$pbkdf2-sha256$`` hashes (passlib's format) are verified too, so users
migrated from other systems keep their passwords.
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


def is_supported_hash(encoded: str) -> bool:
    """Whether ``encoded`` is a hash format :func:`verify_password` understands."""
    return bool(_SCRYPT.match(encoded) or _PBKDF2.match(encoded))


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
    return False
