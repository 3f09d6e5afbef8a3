"""Alembic environment: the connection is handed in by exchange/_database.py, never configured
from a file, so migrations run on exactly the engine (and SQLite pragmas) the exchange uses."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
