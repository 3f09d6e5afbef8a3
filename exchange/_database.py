"""The exchange's database: Alembic migrations, the schema check at start, and the application
role's privileges on PostgreSQL.

The append-only triggers stop code that bypasses ours; the grants stop the exchange's own role:
it may INSERT and SELECT, never UPDATE, DELETE or TRUNCATE. Neither stops a superuser, which is
what checkpoints kept outside the database are for (docs/ledger-format.md, section 5).
"""

from __future__ import annotations

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

import ledger
import ledger.store
from exchange._errors import ConfigError
from ledger.store import APPEND_ONLY_TABLES

MIGRATIONS = Path(__file__).parent / "_migrations"
ALERT_TABLES = (
    "alerts",
    "alert_recipients",
    "alert_subjects",
    "acknowledgements",
    "envelope_numbers",
)
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(url: str) -> tuple[str | None, str]:
    """Apply every pending migration in one transaction; returns (from, to) revisions.

    On PostgreSQL the ledger's advisory lock is held meanwhile, so replicas started together with
    ``--upgrade`` migrate once, and no append runs half-way through a migration."""
    engine = ledger.store.create_engine(url)
    try:
        with engine.connect() as plain:
            connection = ledger.store.writing(plain)
            with connection.begin():
                ledger.store.lock_ledger(connection)
                before = current_revision(connection)
                command.upgrade(_config(connection), "head")
                after = current_revision(connection)
    finally:
        engine.dispose()
    assert after is not None
    return before, after


def check_revision(engine: Engine) -> None:
    """Refuse to serve on a schema other than the one this code was written for."""
    with engine.connect() as connection:
        found = current_revision(connection)
    wanted = head_revision()
    if found != wanted:
        shown = engine.url.render_as_string(hide_password=True)
        raise ConfigError(
            f"database {shown} is at schema revision {found or 'none'}, this exchange needs "
            f"{wanted}: run `sinergi db upgrade` (or `sinergi serve --upgrade`)"
        )


def grant_app_role(url: str, role: str) -> None:
    """Create ``role`` (NOLOGIN) if absent and give it exactly what the exchange needs: SELECT
    and INSERT on every table, the sequences that number alerts; nothing that rewrites."""
    if not _ROLE.fullmatch(role):
        raise ConfigError(f"{role!r} is not a plain PostgreSQL role name")
    engine = ledger.store.create_engine(url)
    try:
        if engine.dialect.name != "postgresql":
            raise ConfigError("database roles are a PostgreSQL feature; SQLite has none")
        tables = ", ".join((*APPEND_ONLY_TABLES, *ALERT_TABLES, "alembic_version"))
        with engine.begin() as connection:
            connection.execute(
                text(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                    f"'{role}') THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
                )
            )
            for statement in (
                f"GRANT USAGE ON SCHEMA public TO {role}",
                f"REVOKE ALL ON {tables} FROM {role}",
                f"GRANT SELECT, INSERT ON {', '.join((*APPEND_ONLY_TABLES, *ALERT_TABLES))} "
                f"TO {role}",
                f"GRANT SELECT ON alembic_version TO {role}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
            ):
                connection.execute(text(statement))
    finally:
        engine.dispose()
