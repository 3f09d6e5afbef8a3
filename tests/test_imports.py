"""The layering (docs/architecture.md, "Components"), kept by reading every import statement.

- ``ledger`` and ``certs`` import nothing of ours: an internal-affairs team verifies with them
  alone; the pure ``ledger`` imports no database code either, so a client verifying receipts
  never loads SQLAlchemy. ``ledger.store`` builds on the pure ``ledger`` and nothing else of ours.
- ``clients`` never import ``exchange``: the CLI loads the server's code by name, from the
  table ``clients._cli._common.BY_NAME`` (docs/decisions/0005, 0015).
- ``exchange`` never imports ``clients``.
- ``witness`` imports the pure ``ledger`` and ``certs`` only: never the exchange, the clients, or
  the ledger's storage.
- No import of our packages hides inside a function, where a reader (or this test) would miss it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("ledger", "certs", "exchange", "clients", "sinergi", "witness")
DATABASE = ("sqlalchemy", "psycopg", "alembic")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted
    where: str  # path:line
    top_level: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(package: str) -> list[Import]:
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            found += [Import(module, t, where, id(node) in top) for t in targets]
    return found


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def _violations(package: str, allowed: tuple[str, ...], forbidden: tuple[str, ...] = ()) -> list:
    return [
        f"{i.where}: {i.module} imports {i.target}"
        for i in _imports(package)
        if (_within(i.target, OURS) and not _within(i.target, allowed))
        or _within(i.target, forbidden)
    ]


def test_pure_ledger_imports_nothing_of_ours_and_no_database_code() -> None:
    pure = [
        f"{i.where}: {i.module} imports {i.target}"
        for i in _imports("ledger")
        if not _within(i.module, ("ledger.store",))
        and (
            (_within(i.target, OURS) and not _within(i.target, ("ledger",)))
            or _within(i.target, ("ledger.store", *DATABASE))
        )
    ]
    assert not pure


def test_ledger_store_builds_on_the_ledger_alone() -> None:
    store = [
        f"{i.where}: {i.module} imports {i.target}"
        for i in _imports("ledger")
        if _within(i.module, ("ledger.store",))
        and _within(i.target, OURS)
        and not _within(i.target, ("ledger",))
    ]
    assert not store


def test_certs_imports_nothing_of_ours() -> None:
    assert not _violations("certs", allowed=("certs",))


def test_clients_never_import_the_server() -> None:
    assert not _violations("clients", allowed=("clients", "ledger", "certs", "sinergi"))


def test_the_exchange_never_imports_the_clients() -> None:
    assert not _violations("exchange", allowed=("exchange", "ledger", "certs", "sinergi"))


def test_the_witness_builds_on_the_pure_ledger_and_certs_alone() -> None:
    """A witness is run by parties who distrust the exchange: none of its code, nor the
    ledger's storage, runs in it."""
    assert not _violations(
        "witness", allowed=("witness", "ledger", "certs"), forbidden=("ledger.store", *DATABASE)
    )


def _loaded(imports: str, *packages: str) -> list[str]:
    """Which of ``packages`` a fresh interpreter has loaded after ``import <imports>``."""
    probe = (
        f"import sys, {imports}; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:]))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe, *packages],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return found.stdout.split()


def test_the_witness_loads_no_server_client_or_database_code() -> None:
    packages = ("sqlalchemy", "psycopg", "alembic", "exchange", "clients")
    assert _loaded("witness, witness._cli", *packages) == []


@pytest.mark.parametrize("package", ["ledger", "certs", "exchange", "clients", "witness"])
def test_no_import_of_ours_hides_in_a_function(package: str) -> None:
    hidden = [
        f"{i.where}: {i.target}"
        for i in _imports(package)
        if not i.top_level and _within(i.target, (*OURS, *DATABASE))
    ]
    assert not hidden


def test_the_client_library_and_agency_commands_load_no_server_or_database_code() -> None:
    """What an agency system loads: the library, the pure ledger and the `alert` commands."""
    packages = ("sqlalchemy", "psycopg", "alembic", "exchange")
    assert _loaded("clients, ledger, clients._cli", *packages) == []
