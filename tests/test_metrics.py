"""Monitoring from cron: `--metrics FILE` (OpenMetrics text for node_exporter's textfile
collector, checked with prometheus_client's parser), `idprov status`, and JSON Lines."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.test_guard import scim, seed  # noqa: F401 - the fixture
from tests.test_sync import db


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an OpenMetrics file, by name and labels (the parser refuses a
    malformed file, and one without its ``# EOF``)."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_sync_writes_a_valid_metrics_file_atomically_without_user_data(cli, scim, tmp_path):  # noqa: F811
    seed(3)
    with db(tmp_path) as conn:
        conn.execute("UPDATE users SET claims = json_set(claims, '$.title', 'T')")
    metrics = tmp_path / "textfile" / "idprov.prom"
    metrics.parent.mkdir()
    metrics.write_text("stale")
    cli("sync", "--metrics", str(metrics)).ok()
    found = samples(metrics)
    assert (
        found[
            (
                "idprov_run_operations",
                (
                    ("command", "sync"),
                    ("idp", "scim"),
                    ("kind", "user.update"),
                    ("outcome", "done"),
                ),
            )
        ]
        == 3
    )
    assert (
        found[("idprov_outbox_rows", (("command", "sync"), ("idp", "scim"), ("status", "pending")))]
        == 0
    )
    last = found[
        ("idprov_last_successful_sync_timestamp_seconds", (("command", "sync"), ("idp", "scim")))
    ]
    assert abs(last - time.time()) < 120  # a real timestamp, to the second
    assert (
        found[("idprov_run_finished_timestamp_seconds", (("command", "sync"), ("outcome", "ok")))]
        > 0
    )
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644
    assert "pl1" not in metrics.read_text() and "example.com" not in metrics.read_text()
    assert [p.name for p in metrics.parent.iterdir()] == ["idprov.prom"]  # no temp files left


def test_a_refused_sync_still_writes_its_metrics(cli, scim, tmp_path):  # noqa: F811
    seed(12)
    with db(tmp_path) as conn:
        conn.execute("DELETE FROM user_roles")
    metrics = tmp_path / "idprov.prom"
    cli("sync", "--metrics", str(metrics), "--json").error(7)
    found = samples(metrics)
    assert found[("idprov_guard_trips", (("command", "sync"), ("idp", "scim")))] == 1
    assert (
        "idprov_run_finished_timestamp_seconds",
        (("command", "sync"), ("outcome", "guard_tripped")),
    ) in found


def test_status_shows_last_sync_and_the_outbox_at_a_glance(cli, scim, tmp_path):  # noqa: F811
    seed(30)
    [before] = cli("status", "--json").json()["items"]
    assert before["idp"] == "scim" and before["last_sync"] is None and before["outbox"] == {}
    cli("sync").ok()
    from idprov.config import load_config
    from idprov.provisioning.service import IdentityService

    service = IdentityService(load_config())
    try:
        service.unassign("staff", [f"pl{i}" for i in range(1, 26)])  # held by the guard
    finally:
        service.close()
    [now] = cli("status", "--json").json()["items"]
    assert now["last_success"] and now["last_sync_outcome"] == "ok"
    assert now["outbox"] == {"held": 26} and now["oldest_waiting_seconds"] >= 0
    text = cli("status").ok().stdout
    assert "scim" in text and "26" in text


def test_import_and_the_worker_write_metrics_too(cli, scim, tmp_path):  # noqa: F811
    seed(1)
    csv = tmp_path / "users.csv"
    csv.write_text("username,email,roles\nann,ann@example.com,staff\nbob,bob@example.com,staff\n")
    metrics = tmp_path / "import.prom"
    cli("import", "users", str(csv), "--metrics", str(metrics)).ok()
    found = samples(metrics)
    assert (
        found[
            (
                "idprov_run_operations",
                (
                    ("command", "import"),
                    ("idp", "scim"),
                    ("kind", "user.create"),
                    ("outcome", "done"),
                ),
            )
        ]
        == 2
    )
    worker = tmp_path / "worker.prom"
    cli("outbox", "work", "--once", "--metrics", str(worker)).ok()
    assert ("idprov_run_duration_seconds", (("command", "outbox-work"),)) in samples(worker)


def test_json_compact_is_one_line_per_run(cli, scim):  # noqa: F811
    seed(1)
    lines = [cli("sync", "--json", "--compact").ok().stdout for _ in range(2)]
    for line in lines:
        assert line.count("\n") == 1 and json.loads(line)["plan"]["application"] == "resident"


def test_a_metrics_file_that_cannot_be_written_is_a_warning_not_the_runs_failure(
    cli,
    scim,  # noqa: F811
    tmp_path,
):
    """The sample unit writes metrics for node_exporter; on a host without its
    directory the sync was applied, then the command failed as a usage error (exit 2)
    with no report. The run's report and exit code stand, with a warning."""
    seed(3)
    missing = tmp_path / "no-such-dir" / "idprov.prom"
    run = cli("sync", "--json", "--metrics", str(missing))
    assert run.exit_code == 0, run
    assert run.json()["outbound"]["ok"] is True
    [line] = [json.loads(x) for x in run.stderr.splitlines() if x.strip()]
    assert "the metrics were not written" in line["warning"]["message"]
    assert not missing.parent.exists()
    folder = tmp_path / "a-directory"
    folder.mkdir()
    run = cli("sync", "--json", "--metrics", str(folder))  # a directory, not a file
    assert run.exit_code == 0 and run.json()["outbound"]["ok"] is True, run
    assert "the metrics were not written" in run.stderr and list(folder.iterdir()) == []


def test_status_gives_each_idp_its_own_part_of_the_last_sync(cli, scim, tmp_path):  # noqa: F811
    """A sync that failed at one IdP showed every IdP's last sync as failed, and
    alerts fired for the healthy one."""
    seed(2)
    add_dead_idp(tmp_path)
    assert cli("sync").exit_code == 6
    found = {s["idp"]: s for s in cli("status", "--json").json()["items"]}
    assert found["scim"]["last_sync_outcome"] == "ok" and found["scim"]["last_success"]
    assert found["dead"]["last_sync_outcome"] == "failed" and not found["dead"]["last_success"]


def add_dead_idp(tmp_path: Path) -> None:
    """A second IdP, where nothing answers, for the resident application."""
    path = tmp_path / "idprov.yaml"
    dead = """  - name: dead
    connector: scim2
    options: {base_url: "http://127.0.0.1:9/v2", auth: bearer, token: env:SCIM_TOKEN}
    retry: {max_attempts: 1, initial_backoff: 0.01, max_backoff: 0.01}
applications:"""
    text = path.read_text().replace("applications:", dead, 1)
    path.write_text(text.replace("identity_providers: [scim]", "identity_providers: [scim, dead]"))


def finished(path: Path, command: str = "sync") -> tuple[str, float]:
    """The outcome label and value of the run's finish sample (there is one)."""
    [found] = [
        (dict(labels)["outcome"], value)
        for (name, labels), value in samples(path).items()
        if name == "idprov_run_finished_timestamp_seconds" and dict(labels)["command"] == command
    ]
    return found


LAST_SUCCESS = (
    "idprov_last_successful_sync_timestamp_seconds",
    (("command", "sync"), ("idp", "scim")),
)


def test_a_run_that_fails_before_it_starts_still_replaces_its_metrics(cli, scim, tmp_path):  # noqa: F811
    """The configuration does not load: the file told of the last success forever, so
    no alert fired. Now it tells of the failed run, and keeps the last success as it
    was, so that an alert on its age fires; the outbox, not read, is not told."""
    seed(1)
    metrics = tmp_path / "idprov.prom"
    cli("sync", "--metrics", str(metrics)).ok()
    before = samples(metrics)
    assert finished(metrics)[0] == "ok"
    config = tmp_path / "idprov.yaml"
    good = config.read_text()
    config.write_text(good.replace("auth: bearer", "auth: bearer, colour: blue"))
    assert cli("sync", "--metrics", str(metrics)).exit_code == 2
    outcome, when = finished(metrics)
    assert (
        outcome == "usage"
        and when
        >= before[
            ("idprov_run_finished_timestamp_seconds", (("command", "sync"), ("outcome", "ok")))
        ]
    )
    after = samples(metrics)
    assert after[LAST_SUCCESS] == before[LAST_SUCCESS]
    assert not [key for key in after if key[0] == "idprov_outbox_rows"]
    config.write_text(good)
    assert (
        cli(
            "sync", "--apply", str(tmp_path / "no-such-plan.json"), "--metrics", str(metrics)
        ).exit_code
        == 3
    )
    assert (
        finished(metrics)[0] == "not_found"
        and samples(metrics)[LAST_SUCCESS] == before[LAST_SUCCESS]
    )


def test_a_sync_that_finds_the_lock_held_says_locked(cli, scim, tmp_path):  # noqa: F811
    from idprov.provisioning.lock import RunLock

    seed(1)
    metrics = tmp_path / "idprov.prom"
    with RunLock(tmp_path / "data", "import"):
        assert cli("sync", "--metrics", str(metrics)).exit_code == 8
    assert finished(metrics)[0] == "locked"
    outbox = ("idprov_outbox_rows", (("command", "sync"), ("idp", "scim"), ("status", "failed")))
    assert samples(metrics)[outbox] == 0  # the state was read, as for a run that finished


def test_every_command_s_outcome_is_a_word_of_one_vocabulary(cli, scim, tmp_path):  # noqa: F811
    """The label mixed words (ok, refused, failed) and exit codes ("6", "9")."""
    seed(1)
    add_dead_idp(tmp_path)
    config = tmp_path / "idprov.yaml"
    runs = {
        "sync": ["sync"],
        "import": ["import", "users", str(tmp_path / "users.csv")],
        "outbox-work": ["outbox", "work", "--once"],
    }
    (tmp_path / "users.csv").write_text("username,email,roles\nann,ann@example.com,staff\n")
    for command, args in runs.items():
        path = tmp_path / f"{command}.prom"
        with db(tmp_path) as conn:  # the rows that failed are due again
            conn.execute("UPDATE outbox SET next_attempt_at = NULL")
        assert cli(*args, "--metrics", str(path)).exit_code == 6
        assert finished(path, command)[0] == "outbound_failed", command
    config.write_text("version: 1\nnot_a_key: 1\n")
    for command, args in runs.items():
        path = tmp_path / f"{command}.prom"
        assert cli(*args, "--metrics", str(path)).exit_code == 2
        assert finished(path, command)[0] == "usage", command


def test_the_outcome_words_are_the_exit_codes_names_and_the_readme_lists_them():
    from idprov.errors import ExitCode
    from idprov.provisioning.metrics import run_outcome

    assert {run_outcome(code) for code in (0, 11, 12)} == {"ok"}
    assert run_outcome(6) == run_outcome("6") == run_outcome("failed") == "outbound_failed"
    assert run_outcome(7) == run_outcome("refused") == "guard_tripped"
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("Run outcomes") :][:3000]
    for code in ExitCode:
        assert f"`{run_outcome(code)}`" in section, code
