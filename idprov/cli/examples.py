"""An example or two for every command's help, kept in one table.

:func:`idprov.cli.commands.humanize` adds them to each command's help as it is
loaded; a test checks that every command has some.
"""

from __future__ import annotations

EXAMPLES: dict[str, list[str]] = {
    "user add": [
        "idprov user add alice -c email=alice@example.com -c given_name=Alice --role staff",
        "idprov user add CORP/bob -c email=bob@example.com --prompt-password",
    ],
    "user show": ["idprov user show alice", "idprov user show CORP/bob --json"],
    "user list": [
        "idprov user list --role staff --limit 50",
        "idprov user list --domain CORP --prefix a --json",
        "idprov user list --limit 0 | cut -f1        # every username, one a line",
    ],
    "user update": ["idprov user update bob -c title=Engineer --unset display_name"],
    "user passwd": [
        "idprov user passwd alice",
        "printf '%s' \"$PW\" | idprov user passwd alice --password-stdin",
    ],
    "user rename": [
        "idprov user rename alice alice.smith@example.com",
        "idprov user rename CORP/bob CORP/robert",
    ],
    "user delete": ["idprov user delete bob", "idprov user delete CORP/bob --yes"],
    "role add": ["idprov role add staff", "idprov role add CORP/admins"],
    "role list": ["idprov role list", "idprov role list --domain CORP --json"],
    "role show": ["idprov role show staff"],
    "role delete": ["idprov role delete interns --yes"],
    "role rename": ["idprov role rename staff employees"],
    "role assign": ["idprov role assign staff alice bob"],
    "role unassign": ["idprov role unassign staff bob"],
    "import users": [
        "idprov import users staff.csv --dry-run",
        "idprov import users staff.csv --mode upsert --create-roles --rejects bad.csv",
        "hr-export | idprov import users - --encoding cp1252 --no-push",
        "idprov import users hr.csv --mode upsert --domain HR --missing disable --dry-run",
        "idprov import users hr.csv --mode upsert --domain HR --missing disable --quiet  # cron",
    ],
    "export users": [
        "idprov export users backup.csv",
        "idprov export users - --domain CORP | gzip > corp.csv.gz",
    ],
    "sync": [
        "idprov sync --dry-run",
        "idprov sync --idp scim-main --verify",
        "idprov sync --quiet --wait          # from cron",
        "idprov sync --verify --repair --detailed-exitcode",
        "idprov sync --quiet --json --compact --metrics /var/lib/node-exporter/idprov.prom",
    ],
    "status": ["idprov status", "idprov status --json"],
    "plan": ["idprov plan --out plan.json && idprov sync --apply plan.json"],
    "explain": ["idprov explain alice --idp scim-main"],
    "log": [
        "idprov log --limit 20",
        "idprov log --action user. --since 2026-11-01",
        "idprov log --since 24h --target alice",
    ],
    "outbox list": ["idprov outbox list", "idprov outbox list --idp scim-main --status failed"],
    "outbox retry": ["idprov outbox retry --idp scim-main"],
    "outbox release": [
        "idprov outbox list --status held",
        "idprov outbox release --idp scim-main --yes --allow-deletes 25",
    ],
    "outbox work": [
        "idprov outbox work                  # until Ctrl-C or SIGTERM",
        "idprov outbox work --once --idp scim-main",
    ],
    "outbox discard": [
        "idprov outbox discard --idp old-scim --yes",
        "idprov outbox discard --idp scim-main --user alice",
    ],
    "idp list": ["idprov idp list"],
    "idp test": ["idprov idp test scim-main"],
    "idp rename": [
        "idprov idp rename corp corp-scim --dry-run",
        "idprov idp rename corp corp-scim",
    ],
    "idp forget-rename": ["idprov idp forget-rename corp"],
    "idp stamp": ["idprov sync --verify --idp oim", "idprov idp stamp oim carol"],
    "idp forget-account": ["idprov idp forget-account oim carol"],
    "connector list": ["idprov connector list"],
    "config validate": [
        "idprov config validate",
        "idprov --config /etc/idprov/idprov.yaml config validate --strict",
    ],
    "config show": ["idprov config show > effective.yaml"],
    "init": ["idprov init", "idprov init --path ./idprov.yaml"],
    "secret set": [
        "idprov secret set scim-token",
        "printf '%s' \"$TOKEN\" | idprov secret set scim-token --stdin",
    ],
    "secret scrub": [
        "idprov secret scrub --dry-run        # after upgrading: which stored errors hold a secret",
        "idprov secret scrub --json",
    ],
    "serve": ["idprov serve --port 8443 --app hr-feed"],
    "token create": [
        "idprov token create --app hr-feed --description 'HR system'",
        "idprov token create --app hr-feed --scope read --description 'reporting'",
    ],
    "token list": ["idprov token list"],
    "state copy": [
        "idprov state copy --to /etc/idprov/idprov-pg.yaml --dry-run",
        "idprov --config /etc/idprov/idprov.yaml state copy --to /etc/idprov/idprov-pg.yaml",
        "idprov --config /etc/idprov/idprov.yaml state copy --forget",
    ],
    "token revoke": ["idprov token revoke 3f2a9c"],
    "jit login": [
        "idprov jit login --app portal --idp okta --id-token @token.jwt",
        "idprov jit login --app portal --idp proxy --claims claims.json",
    ],
}
