"""Where the auditor commands (`sinergi ledger`, `sinergi audit`) read the ledger: a database
(`--db`, the default), an export file (`--file`, for the commands that read one) or the exchange
(`--server` with `--identity`: auditors for entries and inclusion proofs, any member for
checkpoints and consistency). The options are defined here once, and :class:`Source` opens the
one chosen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy import Connection

from clients._cli._common import DEV_PKI, setting_option, witness_policy_option
from clients._client import (
    LEDGER_KEY_FILE,
    ExchangeClient,
    NewestCheckpoint,
    find_witness_policy,
    load_policy,
    load_verifier,
)
from clients._errors import UsageError
from clients._i18n import L_, N_
from ledger import (
    DEFAULT_DATABASE,
    Checkpoint,
    Verifier,
    WitnessPolicy,
    export_checkpoints,
    export_entries,
)
from ledger.store import create_engine, entry_count, iter_checkpoints, iter_entries

R = TypeVar("R")
#: What a source without a policy gives its client, so that it looks for none beside the
#: identity (the source already did, and an auditor's `--db` has no identity to look beside).
_NO_POLICY = WitnessPolicy.parse(b"quorum none\n", "no witness policy")
DEV_LEDGER_KEY = f"{DEV_PKI}/{LEDGER_KEY_FILE}"
#: (seq, hash, bytes) of one entry, as :func:`ledger.verify_ledger` reads them
Row = tuple[int, bytes, bytes]

db_option = setting_option(
    "--db",
    "db",
    N_("SQLAlchemy database URL"),
    default=DEFAULT_DATABASE,
    show_default=DEFAULT_DATABASE,
)
_server_option = click.option(
    "--server",
    default=None,
    help="Ask this exchange instead of reading the database (needs --identity).",
)
_identity_option = setting_option(
    "--identity",
    "identity",
    N_("With --server: your identity directory"),
    type=click.Path(file_okay=False, path_type=str),
)
_ledger_key_option = setting_option(
    "--ledger-key",
    "ledger_key",
    L_("The ledger's verifier key ({file})", file=LEDGER_KEY_FILE),
    default=DEV_LEDGER_KEY,
    show_default=DEV_LEDGER_KEY,
    type=click.Path(dir_okay=False, path_type=Path),
)


@dataclass(frozen=True)
class Whole:
    """The whole ledger of an opened source, read when asked (inside :meth:`Source.open`)."""

    entries: Callable[[], Iterable[Row]]
    checkpoints: Callable[[], Sequence[tuple[int, bytes]]]
    size: Callable[[], int]  # how many entries, for a progress bar


@dataclass(frozen=True)
class Source:
    """The ledger a command reads, as its options chose it: the export file if one is given,
    else the exchange if one is given, else the database."""

    db: str
    export_file: Path | None = None
    server: str | None = None
    identity: str | None = None
    ledger_key: Path = Path(DEV_LEDGER_KEY)
    witness_policy: str | None = None

    @property
    def name(self) -> str:
        """The source as the user named it."""
        if self.export_file is not None:
            return str(self.export_file)
        return self.server if self.server is not None else self.db

    @property
    def is_database(self) -> bool:
        return self.export_file is None and self.server is None

    def verifier(self) -> Verifier:
        """The ledger's verifier key; :class:`UsageError` if it cannot be read."""
        return load_verifier(self.ledger_key)

    def policy(self) -> WitnessPolicy | None:
        """The witness policy: ``--witness-policy`` (or its setting), else ``witness-policy``
        beside the identity or in its parent when an identity is given; None without one, or
        when its quorum is ``none``. :class:`UsageError` if it cannot be read."""
        if self.witness_policy is None and not self.identity:
            return None
        found = find_witness_policy(Path(self.identity or "."), self.witness_policy)
        policy = load_policy(found) if found is not None else None
        return policy if policy is not None and policy.needs_cosignatures else None

    @contextmanager
    def database(self) -> Iterator[Connection]:
        engine = create_engine(self.db)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()

    @contextmanager
    def client(self) -> Iterator[ExchangeClient]:
        """A client of ``--server`` as ``--identity``; :class:`UsageError` without an identity."""
        assert self.server is not None
        if not self.identity:
            raise UsageError(L_("--server needs --identity (or SINERGI_IDENTITY)"))
        with ExchangeClient(
            self.identity,
            self.server,
            ledger_key=self.ledger_key,
            witness_policy=self.policy() or _NO_POLICY,
        ) as client:
            yield client

    @contextmanager
    def open(self) -> Iterator[Whole]:
        """The whole ledger, read inside the ``with`` (a database or an exchange stays open
        until then); from the exchange, up to its newest checkpoint, witnessed."""
        if self.export_file is not None:
            path = self.export_file
            yield Whole(
                lambda: export_entries(path),
                lambda: export_checkpoints(path),
                lambda: sum(1 for _ in export_entries(path)),
            )
        elif self.server is not None:
            with self.client() as client:
                cp, note = witnessed_checkpoint(client)
                yield Whole(
                    lambda: client.entries(1, cp.size), lambda: [(cp.size, note)], lambda: cp.size
                )
        else:
            with self.database() as connection:
                yield Whole(
                    lambda: iter_entries(connection),
                    lambda: list(iter_checkpoints(connection)),
                    lambda: entry_count(connection),
                )


def witnessed_checkpoint(client: ExchangeClient) -> tuple[Checkpoint, bytes]:
    """The exchange's newest checkpoint, verified and witnessed (with the client's witness
    policy, with its quorum), with its signed note as the exchange sent it."""
    newest: NewestCheckpoint = client.newest()
    return newest.checkpoint, newest.note


def source_options(
    *, file_help: str | None = None
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """The options that choose a command's ledger (``--file`` only when ``file_help`` says what
    the file is for), given to the command as one argument, ``source``."""

    def decorate(command: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(command)
        def chosen(
            *args: object,
            db: str,
            server: str | None,
            identity: str | None,
            ledger_key: Path,
            witness_policy: str | None,
            export_file: Path | None = None,
            **kwargs: object,
        ) -> R:
            source = Source(db, export_file, server, identity, ledger_key, witness_policy)
            return command(*args, source=source, **kwargs)

        options = [
            db_option,
            _server_option,
            _identity_option,
            _ledger_key_option,
            witness_policy_option,
        ]
        if file_help is not None:
            path = click.Path(dir_okay=False, exists=True, path_type=Path)
            options.insert(1, click.option("--file", "export_file", type=path, help=file_help))
        for option in reversed(options):
            chosen = option(chosen)
        return chosen

    return decorate
