"""The generated blocks of docs/ledger-format.md: rendered from the code, checked by the tests.

After a deliberate format change, ``SINERGI_WRITE_DOC_VECTORS=1 pytest tests/ledger -k doc_``
rewrites only these blocks.
"""

from __future__ import annotations

import os
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "ledger-format.md"


def generated_block(doc: str, name: str) -> tuple[int, int]:
    """The span of the generated block ``name`` in the document's text."""
    begin = f"<!-- BEGIN GENERATED {name}: tests/ledger; SINERGI_WRITE_DOC_VECTORS=1 rewrites -->\n"
    end = f"\n<!-- END GENERATED {name} -->"
    start = doc.index(begin) + len(begin)
    return start, doc.index(end, start)


def check_doc_block(name: str, rendered: str) -> None:
    """The document's block ``name`` must be exactly ``rendered`` (or is rewritten on request)."""
    doc = DOC.read_text(encoding="utf-8")
    start, stop = generated_block(doc, name)
    if os.environ.get("SINERGI_WRITE_DOC_VECTORS") == "1":
        DOC.write_text(doc[:start] + rendered + doc[stop:], encoding="utf-8")
        return
    assert doc[start:stop] == rendered, f"docs/ledger-format.md {name} drifted from the code"
