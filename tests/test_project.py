"""The repository stands on its own: what a user clones is all a user needs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATED = REPO / "proto" / "sinergi" / "v1"
# A path that leaves the repository for the team's notes, spelt as it would be in a link or a
# docstring.
_OUTSIDE = re.compile(r"\.\./shared\b|\bshared/(?:DESIGN|reference)\b|\bDESIGN\.md\b")
_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _tracked() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / name for name in listed.decode().split("\0") if name]


def test_no_tracked_file_points_outside_the_repository() -> None:
    found = []
    for path in _tracked():
        if path.name == "uv.lock" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [
            f"{path.relative_to(REPO)}:{n}"
            for n, line in enumerate(text.splitlines(), 1)
            if _OUTSIDE.search(line)
        ]
    assert not found


def test_relative_links_in_the_docs_resolve_inside_the_repository() -> None:
    broken = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for target in _MD_LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            resolved = (doc.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert not broken


def _lower_bound(requirement: str) -> tuple[int, ...]:
    found = re.search(r">=\s*([0-9.]+)", requirement)
    assert found, requirement
    return tuple(int(part) for part in found.group(1).split("."))


def test_declared_ranges_admit_only_runtimes_the_generated_code_accepts() -> None:
    """Someone installing the library into their own environment gets no grpcio or protobuf
    older than the generated code checks for at import (it would raise)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=\[ ]", r, maxsplit=1)[0]: r for r in project["dependencies"]}
    grpc_generated = {
        tuple(int(p) for p in m.group(1).split("."))
        for path in GENERATED.glob("*_pb2_grpc.py")
        for m in [re.search(r"GRPC_GENERATED_VERSION = '([0-9.]+)'", path.read_text())]
        if m
    }
    protobuf_generated = {
        tuple(int(p) for p in m.group(1).split("."))
        for path in GENERATED.glob("*_pb2.py")
        for m in [re.search(r"# Protobuf Python Version: ([0-9.]+)", path.read_text())]
        if m
    }
    assert grpc_generated
    assert protobuf_generated
    assert _lower_bound(declared["grpcio"]) >= max(grpc_generated)
    assert _lower_bound(declared["protobuf"]) >= max(protobuf_generated)


def test_every_package_is_installed() -> None:
    """A package missing from pyproject.toml works in this editable checkout and is absent from
    a built wheel."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("exchange", "ledger", "clients", "certs", "witness")
        for init in (REPO / top).rglob("__init__.py")
    }
    examples = {"clients.examples"}  # run from the repository (`make demo`), not installed
    assert found - listed - examples == set()
