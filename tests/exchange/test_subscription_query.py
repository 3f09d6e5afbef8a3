"""The subscription's page query walks the agency's index from the cursor and stops at the
limit: a subscriber resuming far behind must not make the database sort its whole backlog for
every page (that made catching up quadratic in the backlog)."""

from __future__ import annotations

import ledger
import ledger.store
from exchange import _threads


def test_a_page_is_read_in_index_order_without_sorting_the_backlog(sqlite_url: str) -> None:
    engine = ledger.store.create_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            for statement in (_threads._ALERTS_FOR, _threads._ALERTS_FOR_CATEGORIES):
                sql = str(statement.compile(dialect=engine.dialect))
                sql = sql.replace("(__[POSTCOMPILE_categories])", "('PASSPORT_HOLD')")
                plan = [row[3] for row in connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + sql, ("police", 0, "2026-01-01", 100, 0)
                )]  # fmt: skip
                assert any("ix_alert_recipients_agency" in step for step in plan), plan
                assert not any("TEMP B-TREE" in step for step in plan), plan
    finally:
        engine.dispose()
