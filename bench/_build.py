"""Large ledgers, built fast: the writer's rows, written without the writer's round trips.

Appending a million entries through :class:`ledger.store.LedgerWriter` takes minutes (each
batch is one durable commit). The builder writes exactly the rows the writer writes, the same way:

* each entry is an :class:`ledger.EntryDraft` placed with ``at(seq, time, prev)`` and encoded with
  ``encode()``, its hash is ``leaf_hash(body)`` and ``prev`` links to the previous entry's hash;
* every perfect Merkle node ``Frontier.append`` completes goes to ``ledger_nodes``;
* every ``batch`` entries end with one checkpoint signed by ``sign_checkpoint`` with the ledger
  key, as the writer signs one per commit batch;

but commits many batches per transaction. The schema is the one ``initialise_database`` creates
(ledger tables with their append-only triggers, and the exchange's tables), so a server can run
on the result and ``sinergi ledger verify`` accepts it. Built databases are cached under
``bench/results/cache`` (git-ignored) beside the PKI whose key signed them.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ledger
import ledger.store
from bench._common import CACHE, ORIGIN, dev_pki, log
from ledger import Action, Actor, EntryDraft, Frontier, Outcome, leaf_hash

#: One checkpoint per this many entries: the batch the group commit forms under the append
#: benchmark's load (32 concurrent appenders, see docs/performance.md).
BATCH = 32
_COMMIT_EVERY = 20_000
AGENCIES = ("immigration", "police", "customs", "labour")


def _actor(agency: str, kind: str = "system", name: str = "gateway") -> Actor:
    spiffe = f"spiffe://sinergi.dev/agency/{agency}/{kind}/{name}"
    return Actor(spiffe, hashlib.sha256(spiffe.encode()).hexdigest())


def _drafts(count: int, seed: int) -> list[EntryDraft]:
    """A day at the exchange, repeated: a publish, its deliveries and acknowledgements, reads,
    searches, an auditor's read and a refusal, in the proportions the exchange writes them."""
    actors = {agency: _actor(agency) for agency in AGENCIES}
    auditor = _actor("internal-affairs", "officer", "auditor")
    out: list[EntryDraft] = []
    n = 0
    while len(out) < count:
        n += 1
        sender = AGENCIES[n % 4]
        alert = f"alert:{uuid.UUID(int=(seed << 64) + n)}"
        digest = hashlib.sha256(alert.encode()).hexdigest()
        recipients = sorted(a for a in AGENCIES if a != sender)
        out.append(EntryDraft(Action.PUBLISH, actors[sender], objects=(alert,), digest=digest,
                              meta={"category": "PASSPORT_HOLD", "handling": "AMBER",
                                    "to": recipients}))  # fmt: skip
        for i, agency in enumerate(recipients):
            out.append(EntryDraft(Action.DELIVER, actors[agency], objects=(alert,), digest=digest,
                                  meta={"cursor": 3 * n + i}))  # fmt: skip
        out.append(EntryDraft(Action.ACK, actors[recipients[0]], objects=(alert,),
                              digest=digest, meta={"response": "ACCEPTED"}))  # fmt: skip
        out.append(EntryDraft(Action.READ, actors[recipients[1]], objects=(alert,),
                              digest=digest, meta={"method": "GetAlert"}))  # fmt: skip
        if n % 8 == 0:
            out.append(EntryDraft(Action.SEARCH, actors[sender], objects=(alert,), digest=digest,
                                  meta={"kind": "passport", "method": "SearchAlerts",
                                        "results": 1, "salt": digest[:32]}))  # fmt: skip
        if n % 16 == 0:
            out.append(EntryDraft(Action.LEDGER_READ, auditor, digest=digest,
                                  meta={"method": "GetEntries", "results": 100}))  # fmt: skip
            out.append(EntryDraft(
                Action.DENIED, actors["customs"], objects=(alert,), digest=digest,
                outcome=Outcome("PERMISSION_DENIED", "agency 'customs' may not read this alert"),
                meta={"method": "/sinergi.v1.Exchange/GetAlert"},
            ))  # fmt: skip
    return out[:count]


def build_ledger(path: Path, key_dir: Path, entries: int, *, batch: int = BATCH) -> None:
    """A new SQLite database at ``path`` holding ``entries`` ledger entries signed with the key
    in ``key_dir``; the exchange's tables are there too, empty."""
    from exchange import initialise_database  # noqa: PLC0415 - the server package, only here

    if path.exists():
        path.unlink()
    url = f"sqlite:///{path}"
    initialise_database(url)
    signer = ledger.load_signer(key_dir / "ledger.key", ORIGIN)
    pattern = _drafts(4096, seed=1)
    frontier = Frontier()
    prev = ledger.GENESIS_PREV
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # durability is not what is built here
    entry_rows: list[tuple[int, bytes, bytes]] = []
    node_rows: list[tuple[int, int, bytes]] = []
    checkpoint_rows: list[tuple[int, bytes, str]] = []

    def flush() -> None:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO ledger_entries (seq, hash, body) VALUES (?, ?, ?)",
                               entry_rows)  # fmt: skip
        connection.executemany("INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)",
                               node_rows)  # fmt: skip
        connection.executemany(
            "INSERT INTO ledger_checkpoints (size, note, created) VALUES (?, ?, ?)",
            checkpoint_rows,
        )
        connection.execute("COMMIT")
        entry_rows.clear()
        node_rows.clear()
        checkpoint_rows.clear()

    numbers = dict.fromkeys(AGENCIES, 0)  # each recipient's entries so far (meta.to_index)
    for seq in range(1, entries + 1):
        when = start + timedelta(milliseconds=40 * seq)
        draft = pattern[seq % len(pattern)]
        if draft.action is Action.PUBLISH:  # numbered as the exchange numbers them
            to = list(draft.meta["to"])  # type: ignore[arg-type]
            for agency in to:
                numbers[agency] += 1
            to_index = [f"{agency}:{numbers[agency]}" for agency in to]
            draft = replace(draft, meta={**draft.meta, "to_index": to_index})
        body = draft.at(seq, when, prev).encode()
        digest = leaf_hash(body)
        entry_rows.append((seq, digest, body))
        node_rows.extend(frontier.append(digest))
        prev = digest.hex()
        if seq % batch == 0 or seq == entries:
            note = ledger.sign_checkpoint(
                ledger.Checkpoint(ORIGIN, frontier.size, frontier.root()), [signer]
            )
            # SQLAlchemy's DateTime on SQLite stores this text form.
            checkpoint_rows.append((frontier.size, note, when.strftime("%Y-%m-%d %H:%M:%S.%f")))
        if seq % _COMMIT_EVERY == 0:
            flush()
            if seq % 200_000 == 0:
                log(f"  built {seq:,} of {entries:,} entries")
    flush()
    connection.close()


def schema_fingerprint() -> str:
    """A digest of the schema ``initialise_database`` creates today: a cached database built
    under another schema (an older migration) is built anew, not served to a newer server."""
    from exchange import initialise_database  # noqa: PLC0415

    CACHE.mkdir(parents=True, exist_ok=True)
    probe = CACHE / "schema-probe.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{probe}{suffix}").unlink(missing_ok=True)
    initialise_database(f"sqlite:///{probe}")
    connection = sqlite3.connect(probe)
    rows = connection.execute(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    connection.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{probe}{suffix}").unlink(missing_ok=True)
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:12]


_SCHEMA: list[str] = []


def cached_ledger(entries: int, *, batch: int = BATCH) -> tuple[Path, Path]:
    """(database, PKI directory) of a cached ledger of ``entries`` entries, built if absent."""
    pki = dev_pki(CACHE / "pki")
    if not _SCHEMA:
        _SCHEMA.append(schema_fingerprint())
    path = CACHE / f"ledger-{entries}-b{batch}-{_SCHEMA[0]}.db"
    stamp = path.with_suffix(".ok")  # written last: a half-built database is never reused
    if not stamp.exists():
        log(f"building a {entries:,}-entry ledger (cached in {path.relative_to(CACHE.parent)})")
        CACHE.mkdir(parents=True, exist_ok=True)
        build_ledger(path, pki, entries, batch=batch)
        stamp.write_text(f"{entries}\n")
    return path, pki


def copy_database(source: Path, target: Path) -> Path:
    """A private copy of a cached SQLite database (a server appends to it)."""
    for suffix in ("", "-wal", "-shm"):
        stale = Path(f"{target}{suffix}")
        if stale.exists():
            stale.unlink()
    shutil.copyfile(source, target)
    return target
