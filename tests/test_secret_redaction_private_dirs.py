"""The directories idprov creates for its data are 0700 all the way down, whatever
the umask: with umask 000 the missing parents were world-writable (another local
user could move the state directory away and plant their own database)."""

from __future__ import annotations

import os
import stat


def test_missing_parents_of_the_data_directory_are_made_private_under_umask_000(
    cli, tmp_path, monkeypatch
):
    monkeypatch.setenv("IDPROV_DATA_DIR", str(tmp_path / "a" / "b" / "state"))
    old = os.umask(0)
    try:
        cli("user", "add", "alice", "--claim", "email=a@x.com").ok()
    finally:
        os.umask(old)
    for path in ("a", "a/b", "a/b/state"):
        mode = stat.S_IMODE((tmp_path / path).stat().st_mode)
        assert mode == 0o700, f"{path}: {oct(mode)}"
    assert (tmp_path / "a" / "b" / "state" / "idprov.db").exists()
