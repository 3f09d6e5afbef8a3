"""The ledger beside a Merkle-tree library: pymerkle 7.0.0 and its SQLite backend, same leaves.

**Batched append.** Project: one caller appends entries through :class:`LedgerWriter`, 100 per
submission, and waits for each commit, in two shapes: ``append(*drafts)`` (one work of 100
entries) and ``append_many`` (100 works of one entry each in one ``submit_many`` submission,
the shape of a fan-out's deliveries). Each commit encodes and chains the entries and stores
them, their Merkle nodes and a signed checkpoint, durably (WAL, synchronous=FULL). Peer:
pymerkle's ``SqliteTree.append_entries`` with the bytes of the same 100 entries (read back from
the project's database), one durable transaction per call storing the leaves and their hashes
(pymerkle makes no node at append time), its connection set to the ledger's own WAL and
synchronous=FULL: as durable, and faster than the rollback journal pymerkle leaves SQLite in,
which is measured too and recorded in the details. The two take turns twice; each figure is
the mean of its two runs.

**Inclusion proofs.** Project: ``ledger.store.prove`` (an entry and its inclusion proof in the
newest checkpoint) on the ledgers benchmark 5 builds and caches, at 10,000, 100,000 and
1,000,000 entries (bench-quick stops at 100,000). Peer: ``SqliteTree.prove_inclusion`` on a
pymerkle database whose leaves are the same entries' bytes, built once and cached beside them.
Both answer the same random leaves after 20 proofs that warm them (pymerkle keeps the roots of
subtrees of 128 leaves or more it has computed in an LRU cache, 1 GiB by default), in halves
ordered Sinergi, pymerkle, pymerkle, Sinergi: a drift of the machine weighs on both alike, and
each runs its proofs back to back, in its own steady state (a pymerkle proof at 1,000,000 reads
thousands of leaf rows). pymerkle stops early when its proofs exceed a time budget, and says so. At
every size the first proof of each is checked to be the same path: the same leaves under the
same RFC 6962 hashing. Target at 1,000,000 leaves (so not in bench-quick): Sinergi's proof at
most a tenth of pymerkle's.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ledger
import ledger.store
from bench._build import _drafts, cached_ledger
from bench._common import CACHE, ORIGIN, RESULTS, Result, Sizes, Skipped, dev_pki, log
from ledger import EntryDraft

BATCH = 100
APPEND_TARGET = 0.5
PROOF_TARGET = 0.1  # Sinergi's time over pymerkle's: at least 10 times faster...
TARGET_SIZE = 1_000_000  # ...at a million leaves (issue 26); bench-quick has no target row
PROOFS = 400
WARM = 20


def _pymerkle() -> Any:
    try:
        import pymerkle  # noqa: PLC0415 - a development dependency, for this benchmark only
    except ImportError:
        raise Skipped("pymerkle is not installed (make install)") from None
    return pymerkle


def _sinergi_append(
    url: str, signer: ledger.Signer, drafts: list[EntryDraft], many: bool
) -> dict[str, object]:
    """Entries/s appending ``drafts`` 100 per submission, waiting for each commit."""
    engine = ledger.store.create_engine(url)
    ledger.store.create_schema(engine)
    writer = ledger.store.LedgerWriter(engine, signer, ORIGIN)
    writer.append(drafts[0]).result()  # the first batch loads the head; not timed
    timed = drafts[1:]
    began = time.perf_counter()
    for start in range(0, len(timed), BATCH):
        batch = timed[start : start + BATCH]
        if many:
            for future in writer.append_many([(d,) for d in batch]):
                future.result()
        else:
            writer.append(*batch).result()
    elapsed = time.perf_counter() - began
    writer.close()
    engine.dispose()
    return {"entries": len(timed), "seconds": elapsed, "rate": len(timed) / elapsed}


def _bodies(url: str) -> list[bytes]:
    engine = ledger.store.create_engine(url)
    with engine.connect() as connection:
        bodies = [body for _seq, _hash, body in ledger.store.iter_entries(connection)]
    engine.dispose()
    return bodies[1:]  # the untimed first entry


def _pymerkle_append(path: Path, bodies: list[bytes], *, wal: bool) -> dict[str, object]:
    """Entries/s of ``append_entries``, 100 per call: with SQLite's defaults as pymerkle leaves
    them (rollback journal, synchronous=FULL), or with ``wal`` in the ledger's own mode (WAL,
    synchronous=FULL: as durable, fewer syncs per commit)."""
    tree = _pymerkle().SqliteTree(str(path))
    if wal:
        tree.con.execute("PRAGMA journal_mode=WAL")
        tree.con.execute("PRAGMA synchronous=FULL")
    began = time.perf_counter()
    for start in range(0, len(bodies), BATCH):
        tree.append_entries(bodies[start : start + BATCH])
    elapsed = time.perf_counter() - began
    journal = tree.con.execute("PRAGMA journal_mode").fetchone()
    synchronous = tree.con.execute("PRAGMA synchronous").fetchone()
    assert tree.get_size() == len(bodies)
    tree.close()
    return {"entries": len(bodies), "seconds": elapsed, "rate": len(bodies) / elapsed,
            "journal_mode": journal, "synchronous": synchronous}  # fmt: skip


def _append(sizes: Sizes) -> list[Result]:
    pki = dev_pki(CACHE / "pki")
    signer = ledger.load_signer(pki / "ledger.key", ORIGIN)
    drafts = _drafts(sizes.peer_append_entries + 1, seed=8)
    runs: dict[str, list[dict[str, object]]] = {
        "work": [],
        "works": [],
        "pymerkle": [],
        "pymerkle_default_journal": [],
    }
    with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
        for turn in range(2):
            for shape, many in (("work", False), ("works", True)):
                url = f"sqlite:///{Path(tmp) / f'sinergi-{shape}-{turn}.db'}"
                runs[shape].append(_sinergi_append(url, signer, drafts, many))
            if turn == 0:
                bodies = _bodies(url)
            for name, wal in (("pymerkle", True), ("pymerkle_default_journal", False)):
                path = Path(tmp) / f"{name}-{turn}.db"
                runs[name].append(_pymerkle_append(path, bodies, wal=wal))
            log("   " + ", ".join(f"{name} {float(r[-1]['rate']):,.0f}/s"  # type: ignore[arg-type]
                                  for name, r in runs.items()))  # fmt: skip
    rate = {name: sum(float(r["rate"]) for r in mine) / len(mine)  # type: ignore[arg-type]
            for name, mine in runs.items()}  # fmt: skip
    peer = (
        "baseline: pymerkle 7.0.0 SqliteTree.append_entries of the same entries' bytes, 100 per "
        "call (one durable transaction each), its connection in WAL mode with synchronous=FULL "
        "like the ledger's (faster than its default journal, in details); two alternating runs"
    )
    return [
        Result(
            "8", "batched append, 100 entries per work: Sinergi vs pymerkle", "entries/s",
            rate["work"], rate["pymerkle"], APPEND_TARGET, notes=peer,
            details={"sinergi": runs["work"], "pymerkle": runs["pymerkle"],
                     "pymerkle_default_journal": runs["pymerkle_default_journal"]},
        ),
        Result(
            "8", "batched append, 100 one-entry works per submission: Sinergi vs pymerkle",
            "entries/s", rate["works"], rate["pymerkle"], APPEND_TARGET, notes=peer,
            details={"sinergi": runs["works"], "pymerkle": runs["pymerkle"],
                     "pymerkle_default_journal": runs["pymerkle_default_journal"]},
        ),
    ]  # fmt: skip


def _entries(path: Path) -> Iterator[bytes]:
    """The bodies of a cached ledger, in seq order, read in pages."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    cursor = connection.execute("SELECT body FROM ledger_entries ORDER BY seq")
    while rows := cursor.fetchmany(10_000):
        for (body,) in rows:
            yield body
    connection.close()


def _pymerkle_tree(ledger_path: Path, size: int) -> Path:
    """A pymerkle database whose leaves are the cached ledger's entries, built once."""
    path = ledger_path.with_name(f"pymerkle-7.0.0-{ledger_path.stem}.db")
    stamp = path.with_suffix(".ok")  # written last: a half-built tree is never reused
    if not stamp.exists():
        log(f"building a {size:,}-leaf pymerkle tree (cached in {path.relative_to(CACHE.parent)})")
        path.unlink(missing_ok=True)
        tree = _pymerkle().SqliteTree(str(path))
        tree.append_entries(_entries(ledger_path), chunksize=20_000)  # one transaction
        assert tree.get_size() == size
        tree.close()
        stamp.write_text(f"{size}\n")
    return path


def _timed(prove: Callable[[int], object], seqs: list[int]) -> float:
    began = time.perf_counter()
    for seq in seqs:
        prove(seq)
    return time.perf_counter() - began


def _proofs_at(size: int, budget: float) -> dict[str, object]:
    """Mean µs of an inclusion proof at ``size`` leaves, Sinergi's and pymerkle's, on the same
    random leaves, in halves ordered Sinergi, pymerkle, pymerkle, Sinergi; pymerkle's proofs
    stop once they took ``budget`` s."""
    ledger_path, _pki = cached_ledger(size)
    tree_path = _pymerkle_tree(ledger_path, size)
    rng = random.Random(size)
    seqs = [rng.randint(1, size) for _ in range(WARM + PROOFS)]
    engine = ledger.store.create_engine(f"sqlite:///{ledger_path}")
    tree = _pymerkle().SqliteTree(str(tree_path))
    try:
        with engine.connect() as connection:
            sinergi = ledger.store.prove(connection, seqs[0])
            peer = tree.prove_inclusion(seqs[0], size)
            # The same leaf, the same path: pymerkle's starts with the leaf's own hash.
            assert sinergi.tree_size == size
            assert peer.path == [sinergi.entry_hash, *sinergi.inclusion_proof], "paths differ"

            def ours(seq: int) -> object:
                return ledger.store.prove(connection, seq)

            def theirs(seq: int) -> object:
                return tree.prove_inclusion(seq, size)

            began = time.perf_counter()
            warm_theirs = _timed(theirs, seqs[:WARM])
            warm_ours = _timed(ours, seqs[:WARM])
            totals, counts = [0.0, 0.0], [0, 0]
            half = PROOFS // 2
            halves = (seqs[WARM : WARM + half], seqs[WARM + half :])
            for side, part in ((0, halves[0]), (1, halves[0]), (1, halves[1]), (0, halves[1])):
                if side == 0:
                    totals[0] += _timed(ours, part)
                    counts[0] += len(part)
                    continue
                for start in range(0, len(part), 50):  # pymerkle within its time budget
                    if totals[1] >= budget:
                        break
                    totals[1] += _timed(theirs, part[start : start + 50])
                    counts[1] += len(part[start : start + 50])
            seconds = time.perf_counter() - began
            cache = tree.get_cache_info()
    finally:
        tree.close()
        engine.dispose()
    return {
        "size": size,
        "sinergi_us": 1e6 * totals[0] / counts[0],
        "pymerkle_us": 1e6 * totals[1] / counts[1],
        "sinergi_proofs": counts[0],
        "pymerkle_proofs": counts[1],
        "pymerkle_stopped_early": counts[1] < counts[0],
        "warm_sinergi_us": 1e6 * warm_ours / WARM,
        "warm_pymerkle_us": 1e6 * warm_theirs / WARM,
        "pymerkle_cache": {"bytes": cache.size, "hits": cache.hits, "misses": cache.misses},
        "seconds": seconds,
    }


def _proofs(sizes: Sizes) -> list[Result]:
    results = []
    for size in sizes.peer_proof_sizes:
        log(f"8. inclusion proofs at {size:,} leaves, Sinergi and pymerkle")
        measured = _proofs_at(size, budget=4 * sizes.seconds)
        ours, theirs = float(measured["sinergi_us"]), float(measured["pymerkle_us"])  # type: ignore[arg-type]
        early = measured["pymerkle_stopped_early"]
        stopped = f"; pymerkle stopped after {measured['pymerkle_proofs']} proofs" if early else ""
        log(f"   {ours:,.0f} us vs {theirs:,.0f} us ({theirs / ours:,.1f} times){stopped}")
        results.append(Result(
            "8", f"inclusion proof at {size:,} leaves: Sinergi vs pymerkle", "µs", ours, theirs,
            PROOF_TARGET if size == TARGET_SIZE else None, higher=False,
            notes="baseline: pymerkle 7.0.0 SqliteTree.prove_inclusion on the same leaves; "
            f"mean of the same random leaves after {WARM} warming proofs, in halves ABBA"
            + (f" (pymerkle: its first {measured['pymerkle_proofs']} only, time budget)"
               if early else ""),
            details=measured,
        ))  # fmt: skip
    return results


def run(sizes: Sizes) -> list[Result]:
    _pymerkle()
    log(f"8. batched append, {BATCH} per submission, SQLite: Sinergi and pymerkle")
    results = _append(sizes)
    return results + _proofs(sizes)
