"""What every benchmark shares: results, timing, waiting on conditions, the machine, the PKI."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeVar

import sqlalchemy
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
ORIGIN = "sinergi.dev/ledger"
PG_URL = os.environ.get("SINERGI_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

T = TypeVar("T")


@dataclass
class Result:
    """One row of the table: the project's figure beside its baseline, and the target ratio.

    ``higher`` says whether a bigger ratio is better (a rate) or worse (a time, a memory size):
    the figure passes when ratio >= target (higher) or ratio <= target (not higher).

    A row without a target (``target`` None) is recorded beside the others, judged by none; a
    row without a project figure (``project`` None) is a peer's figure alone, where the project
    has no comparable figure yet (a peer's fan-out, benchmark 7)."""

    benchmark: str
    figure: str
    unit: str
    project: float | None
    baseline: float
    target: float | None
    higher: bool = True
    notes: str = ""
    details: dict[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.project is None or not self.baseline:
            return float("nan")
        return self.project / self.baseline

    @property
    def passed(self) -> bool | None:
        """Whether the target is met; None for a row without a target or a project figure."""
        if self.target is None or self.project is None:
            return None
        return self.ratio >= self.target if self.higher else self.ratio <= self.target

    def to_json(self) -> dict[str, object]:
        ratio = self.ratio
        return {**asdict(self), "ratio": None if ratio != ratio else ratio, "passed": self.passed}


class Skipped(Exception):
    """A benchmark that cannot run here (a peer unreachable, a package missing): the run reports
    it with the reason instead of a figure."""


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run: ``make bench`` (full) or ``make bench-quick``."""

    name: str
    seconds: float  # how long each throughput measurement runs
    verify_entries: int
    proof_small: int
    proof_large: int
    memory_small: int
    memory_large: int
    append_entries: int  # entries per append measurement
    memory_work: int  # publishes per publisher and proofs in the memory benchmark's workload
    peer_append_entries: int  # entries per batched-append measurement beside pymerkle
    peer_proof_sizes: tuple[int, ...]  # ledger sizes of the proofs beside pymerkle's


FULL = Sizes("full", 8.0, 1_000_000, 10_000, 1_000_000, 100_000, 1_000_000, 20_000, 150,
             50_000, (10_000, 100_000, 1_000_000))  # fmt: skip
QUICK = Sizes("quick", 3.0, 100_000, 10_000, 100_000, 10_000, 100_000, 5_000, 50,
              10_000, (10_000, 100_000))  # fmt: skip


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_for(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``condition`` until it returns something truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def dev_pki(directory: Path) -> Path:
    """A development PKI with the ledger key (as tests/conftest.py makes it), made once."""
    from certs import create_dev_pki  # noqa: PLC0415 - heavy import, only when needed
    from ledger import write_signing_key  # noqa: PLC0415

    if not (directory / "ledger.key").exists():
        create_dev_pki(directory)
        write_signing_key(directory, ORIGIN)
    return directory


def fresh_copy(source: Path, target: Path) -> Path:
    """Copy a PKI (witness state and all) so that one benchmark's clients start clean."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A PostgreSQL database of this run's own, dropped afterwards."""
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"sinergi_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _postgres_version() -> str:
    try:
        engine = sqlalchemy.create_engine(PG_URL)
        with engine.connect() as connection:
            version = str(connection.exec_driver_sql("SHOW server_version").scalar_one())
            fsync = str(connection.exec_driver_sql("SHOW fsync").scalar_one())
            commit = str(connection.exec_driver_sql("SHOW synchronous_commit").scalar_one())
        engine.dispose()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        return f"unreachable ({type(exc).__name__})"
    return f"{version} (fsync={fsync}, synchronous_commit={commit})"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _disk() -> str:
    """The block device under bench/results, as lsblk names it (best effort)."""
    try:
        source = subprocess.run(
            ["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--target", str(RESULTS)],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return re.sub(r"\s+", " ", source)


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "cryptography": _version("cryptography"),
        "sqlalchemy": _version("sqlalchemy"),
        "psycopg": _version("psycopg"),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _postgres_version(),
        "filesystem": _disk(),
        "load_average": list(os.getloadavg()),  # other work on the machine skews the figures
    }


def write_json(path: Path, payload: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


class Child:
    """A process of the benchmark (a server, the subscribers): its stdout lines are collected by
    a reader thread, so that waiting for one is a wait on a condition, never a sleep."""

    def __init__(self, argv: list[str], *, stderr: Path | None = None, name: str = "") -> None:
        import queue  # noqa: PLC0415
        import threading  # noqa: PLC0415

        self.name = name or argv[0]
        self._stderr = open(stderr, "ab") if stderr else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=ROOT
        )
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put("")  # end of output

    @property
    def pid(self) -> int:
        return self.process.pid

    def next_line(self, timeout: float) -> str:
        """The next line of output; TimeoutError if none comes, RuntimeError if it exited."""
        import queue  # noqa: PLC0415

        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name} printed nothing within {timeout}s") from None
        if line == "" and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with status {self.process.returncode}")
        return line

    def ready_json(self, timeout: float = 60.0) -> dict[str, object]:
        """Wait for the JSON line with the port that a server prints once it listens."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            if line.startswith("{"):
                value = json.loads(line)
                if not isinstance(value, dict) or value.get("ok") is False:
                    raise RuntimeError(f"{self.name} failed: {line}")
                if "port" in value:
                    return value

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0) -> None:
        """Close stdin and send SIGTERM; wait for the exit (kill after ``timeout``)."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._stderr is not subprocess.DEVNULL:
            self._stderr.close()  # type: ignore[union-attr]
