"""The schema is managed by migrations; the exchange's own PostgreSQL role may not rewrite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import make_url

import ledger
import ledger.store
from clients import ExchangeClient, new_alert
from exchange import ConfigError, ExchangeServer, ServerConfig
from exchange._database import grant_app_role, head_revision, upgrade
from exchange._tables import metadata as alert_metadata
from ledger.store import metadata as ledger_metadata
from tests.conftest import RunningServer

APP_ROLE = "sinergi_app"


def test_the_models_match_the_migrated_schema(db_url: str) -> None:
    models = sqlalchemy.MetaData()
    for table in (*ledger_metadata.tables.values(), *alert_metadata.tables.values()):
        table.to_metadata(models)
    engine = sqlalchemy.create_engine(db_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), models)
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    assert differences == []
    assert revision == head_revision()
    assert upgrade(db_url) == (head_revision(), head_revision())  # idempotent


def test_a_database_without_the_current_schema_is_refused(tmp_path: Path, pki: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = ledger.store.create_engine(url)
    ledger.store.create_schema(engine)
    alert_metadata.create_all(engine)  # the tables, but not made by the migrations
    engine.dispose()
    config = ServerConfig(identity=pki / "server", ledger_key=pki / "ledger.key", database=url)
    with pytest.raises(ConfigError, match=r"schema revision none.*sinergi db upgrade"):
        ExchangeServer(config)


@pytest.mark.postgres
def test_the_application_role_may_insert_and_select_only(
    start_server: Callable[..., RunningServer], pg_url: str
) -> None:
    db_url = pg_url  # database roles are a PostgreSQL feature
    grant_app_role(db_url, APP_ROLE)
    admin = sqlalchemy.create_engine(db_url)
    with admin.begin() as connection:
        connection.exec_driver_sql(f"ALTER ROLE {APP_ROLE} LOGIN")
    admin.dispose()
    as_app = make_url(db_url).set(username=APP_ROLE).render_as_string(hide_password=False)
    running = start_server(as_app)  # the whole exchange runs as the restricted role
    with ExchangeClient(running.pki / "immigration", running.address) as client:
        client.publish(new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="x"))
    engine = sqlalchemy.create_engine(as_app)
    refused = []
    for statement in (
        "UPDATE ledger_entries SET body = body",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
        "UPDATE ledger_checkpoints SET note = note",
        "DELETE FROM ledger_nodes",
        "UPDATE alerts SET body = body",
        "DELETE FROM acknowledgements",
        "DROP TABLE ledger_entries",
    ):
        with pytest.raises(sqlalchemy.exc.ProgrammingError) as error, engine.begin() as c:
            c.exec_driver_sql(statement)
        refused.append(type(error.value.orig).__name__)
    engine.dispose()
    # Refused by privilege, before any trigger: the role itself cannot rewrite.
    assert set(refused) == {"InsufficientPrivilege"}
    assert len(running.entries()) >= 2
