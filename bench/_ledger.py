"""Verifying a large ledger beside bare hashing; proofs at 1,000,000 entries beside 10,000.

Verify runs what ``sinergi ledger verify --db`` runs: the append-only trigger check, then
``verify_database(url, [verifier])`` (every entry's canonical form, hash, link and seq; the
RFC 6962 root at every stored checkpoint; every signature), which spreads the work over one
process per core. The baseline is SHA-256 of each entry's bytes, already in memory, in a Python
loop (one core). The sequential ``verify_ledger`` is timed too, for the record.

Proofs are ``ledger.store.prove`` (an inclusion proof in the newest checkpoint, with the entry) and
``ledger.store.prove_consistency`` (from a random earlier size to the newest), from the database.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import Connection

import ledger
import ledger.store
from bench._build import cached_ledger, copy_database
from bench._common import RESULTS, Result, Sizes, fresh_copy, log
from bench._exchange import serve_exchange
from clients import ExchangeClient

PROOFS = 400
ROUNDS = 8


def _verify(path: Path, pki: Path) -> tuple[float, float, dict[str, object]]:
    verifier = ledger.Verifier.from_vkey((pki / "ledger.vkey").read_text().strip())
    engine = ledger.store.create_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        # Warm the page cache the same way for both sides: read everything once.
        bodies = [body for _seq, _hash, body in ledger.store.iter_entries(connection)]
        checkpoints = sum(1 for _ in ledger.store.iter_checkpoints(connection))
        began = time.perf_counter()
        for body in bodies:
            hashlib.sha256(body).digest()
        bare = time.perf_counter() - began

        began = time.perf_counter()
        read_only = sum(1 for _ in ledger.store.iter_entries(connection))
        reading = time.perf_counter() - began

        # What no verifier of this ledger escapes: reading the rows, and a signature per stored
        # checkpoint. Spread over the cores, it bounds verify however little its per-entry
        # checks cost (docs/performance.md, "4. Verify").
        began = time.perf_counter()
        for size, note in ledger.store.iter_checkpoints(connection):
            assert ledger.open_checkpoint(note, [verifier]).size == size
        opening = time.perf_counter() - began

        began = time.perf_counter()
        sequential = ledger.verify_ledger(
            ledger.store.iter_entries(connection),
            ledger.store.iter_checkpoints(connection),
            [verifier],
        )
        one_core = time.perf_counter() - began

        began = time.perf_counter()
        missing = ledger.store.missing_triggers(connection)
    report = ledger.store.verify_database(f"sqlite:///{path}", [verifier])
    verifying = time.perf_counter() - began
    engine.dispose()
    assert not missing
    assert report == sequential
    assert report.entries == len(bodies) == read_only
    processes = len(os.sched_getaffinity(0))
    return (
        len(bodies) / verifying,
        len(bodies) / bare,
        {
            "entries": len(bodies),
            "checkpoints": checkpoints,
            "mean_entry_bytes": sum(map(len, bodies)) / len(bodies),
            "verify_seconds": verifying,
            "processes": processes,
            "verify_ledger_one_core_seconds": one_core,
            "sha256_seconds": bare,
            "iter_entries_seconds": reading,
            "open_checkpoints_seconds": opening,
            "bound_rate": len(bodies) * processes / (reading + opening),
        },
    )


def _online(path: Path, key_pki: Path) -> dict[str, object]:
    """What ``sinergi ledger verify --server`` does, timed: an auditor reads every entry up to
    the newest checkpoint from ``sinergi serve`` (GetEntryPages) and verifies them against it.
    On a copy of the ledger, since the server records the read."""
    work = Path(tempfile.mkdtemp(prefix="online-", dir=RESULTS))
    try:
        pki = fresh_copy(key_pki, work / "pki")
        database = copy_database(path, work / "online.db")
        verifier = ledger.Verifier.from_vkey((pki / "ledger.vkey").read_text().strip())
        with serve_exchange(pki, f"sqlite:///{database}", work, "online") as (_child, address):
            witness = work / "witness-auditor.json"
            auditor = ExchangeClient(pki / "internal-affairs", address, witness_state=witness)
            with auditor:
                began = time.perf_counter()
                cp = auditor.checkpoint()
                note = auditor.witness.notes()[cp.origin]
                report = ledger.verify_ledger(auditor.entries(1, cp.size), [(cp.size, note)],
                                              [verifier])  # fmt: skip
                seconds = time.perf_counter() - began
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"online_verify_entries": report.entries, "online_verify_seconds": seconds,
            "online_verify_rate": report.entries / seconds}  # fmt: skip


def _proofs(connection: Connection, rng: random.Random, count: int) -> tuple[float, float]:
    """Seconds of ``count`` random inclusion proofs and of ``count`` consistency proofs."""
    size = ledger.store.entry_count(connection)
    seqs = [rng.randint(1, size) for _ in range(count)]
    firsts = [rng.randint(1, size - 1) for _ in range(count)]
    began = time.perf_counter()
    for seq in seqs:
        ledger.store.prove(connection, seq)
    inclusion = time.perf_counter() - began
    began = time.perf_counter()
    for first in firsts:
        ledger.store.prove_consistency(connection, first, size)
    return inclusion, time.perf_counter() - began


def _proof_times(small: Path, large: Path) -> tuple[tuple[float, float], tuple[float, float]]:
    """Mean seconds of one inclusion and one consistency proof, (small, large). The two ledgers
    take turns in rounds, so that other work on the machine weighs on both alike."""
    rng = random.Random(5)
    engines = [ledger.store.create_engine(f"sqlite:///{path}") for path in (small, large)]
    totals = [[0.0, 0.0], [0.0, 0.0]]
    with engines[0].connect() as first, engines[1].connect() as second:
        connections = (first, second)
        for connection in connections:
            _proofs(connection, rng, 20)  # warm the statement caches and the page cache
        for _round in range(ROUNDS):
            for side, connection in enumerate(connections):
                inclusion, consistency = _proofs(connection, rng, PROOFS // ROUNDS)
                totals[side][0] += inclusion
                totals[side][1] += consistency
    for engine in engines:
        engine.dispose()
    (a, b), (c, d) = totals
    return (a / PROOFS, b / PROOFS), (c / PROOFS, d / PROOFS)


def run(sizes: Sizes, only: set[str]) -> list[Result]:
    results = []
    if "4" in only:
        large, pki = cached_ledger(sizes.verify_entries)
        log(f"4. verify a {sizes.verify_entries:,}-entry ledger")
        project, baseline, details = _verify(large, pki)
        log(f"   {project:,.0f} entries/s vs {baseline:,.0f} SHA-256/s")
        bound = float(details["bound_rate"])  # type: ignore[arg-type]
        log(
            f"   bound (reading the rows and opening the checkpoints, on {details['processes']} "
            f"cores): {bound:,.0f} entries/s, {bound / baseline:.3f} of the baseline"
        )
        details.update(_online(large, pki))
        log(
            f"   online (verify --server, one client process): "
            f"{details['online_verify_rate']:,.0f} entries/s"
        )
        results.append(
            Result("4", f"verify {sizes.verify_entries:,} entries", "entries/s", project,
                   baseline, 0.25, notes="baseline: SHA-256 of each entry's bytes",
                   details=details)
        )  # fmt: skip
    if "5" not in only:
        return results
    small, _ = cached_ledger(sizes.proof_small)
    big, _ = cached_ledger(sizes.proof_large)
    log(f"5. proofs at {sizes.proof_large:,} vs {sizes.proof_small:,} entries")
    (small_inclusion, small_consistency), (big_inclusion, big_consistency) = _proof_times(
        small, big
    )
    log(
        f"   inclusion {1e6 * big_inclusion:,.0f} vs {1e6 * small_inclusion:,.0f} us, "
        f"consistency {1e6 * big_consistency:,.0f} vs {1e6 * small_consistency:,.0f} us"
    )
    for name, big_t, small_t in (
        ("inclusion proof (prove)", big_inclusion, small_inclusion),
        ("consistency proof (prove_consistency)", big_consistency, small_consistency),
    ):
        results.append(Result(
            "5", f"{name} at {sizes.proof_large:,} vs {sizes.proof_small:,}", "us",
            1e6 * big_t, 1e6 * small_t, 2.0, higher=False,
            notes=f"mean of {PROOFS} random proofs from the database, {ROUNDS} alternating rounds",
        ))  # fmt: skip
    return results
