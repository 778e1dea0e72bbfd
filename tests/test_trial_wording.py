"""Errors a newcomer met in the trial, in the words that say what to do."""

from __future__ import annotations


def test_a_short_password_is_told_its_length_not_the_pattern(cli):
    error = cli("user", "add", "alice", "--password-stdin", "--json", input="shrt\n").error(5)
    assert error["message"] == (
        "the password is too short: the PRIMARY userstore's password pattern asks for "
        "at least 8 characters (at most 256, no control characters)"
    )
    assert "x00" not in error["message"] and "shrt" not in str(error)
