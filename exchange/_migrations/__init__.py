"""Alembic migrations of the exchange's database: the ledger tables with their append-only
triggers, and the alert tables. `sinergi db upgrade` applies them (exchange/_database.py)."""
