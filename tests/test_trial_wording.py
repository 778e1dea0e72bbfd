"""Errors a newcomer met in the trial, in the words that say what to do."""

from __future__ import annotations

import pytest


def test_a_short_password_is_told_its_length_not_the_pattern(cli):
    error = cli("user", "add", "alice", "--password-stdin", "--json", input="shrt\n").error(5)
    assert error["message"] == (
        "the password is too short: the PRIMARY userstore's password pattern asks for "
        "at least 8 characters (at most 256, no control characters)"
    )
    assert "x00" not in error["message"] and "shrt" not in str(error)


def test_a_confirmation_with_no_terminal_and_no_answer_says_to_pass_yes(cli, state):
    cli("user", "add", "erin").ok()
    cli("role", "add", "tmp").ok()
    before = state.dump()
    for args in (["user", "delete", "erin"], ["role", "delete", "tmp"]):
        stderr = cli(*args, input="").fails(1)
        assert "error: cannot ask for confirmation (stdin is not a terminal): pass --yes" in stderr
        assert "nothing was changed" in stderr
    assert state.dump() == before
    cli("user", "delete", "erin", "--yes").ok()


def test_a_piped_answer_still_counts(cli):
    cli("user", "add", "erin").ok()
    assert "aborted" in cli("user", "delete", "erin", input="n\n").fails(1)
    cli("user", "delete", "erin", input="y\n").ok()


def test_a_file_secret_whose_file_is_missing_says_so(tmp_path):
    from idprov.config.secrets import SecretError, SecretRef

    missing = tmp_path / "nonexistent" / "tok"
    with pytest.raises(SecretError) as info:
        SecretRef(f"file:{missing}").reveal()
    assert info.value.message == (
        f"secret file:{missing} cannot be read: file {missing} does not exist"
    )
    assert info.value.hint is not None and "correct the path" in info.value.hint
