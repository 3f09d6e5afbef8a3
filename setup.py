"""The package's one build step beyond pyproject.toml: the gettext catalogs (docs/i18n.md).

Each committed ``clients/locale/<lang>/LC_MESSAGES/sinergi.po`` is compiled into the
``sinergi.mo`` the CLI reads, whenever the package is built: into the wheel (``pip install``),
or beside the ``.po`` for an editable install (``make install``, which also compiles them
itself). Compiled catalogs are never committed. Babel, which compiles them, is pinned in
``[build-system] requires`` and in ``[tool.uv] build-constraint-dependencies``.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from setuptools import setup
from setuptools.command.build_py import build_py

LOCALES = Path(__file__).parent / "clients" / "locale"


def compile_catalogs(target: Path) -> list[str]:
    """Compile every ``.po`` under :data:`LOCALES` into ``target`` (same layout); fuzzy
    entries are left out, as ``pybabel compile`` leaves them. Returns the files written."""
    written = []
    for po in sorted(LOCALES.glob("*/LC_MESSAGES/*.po")):
        with po.open("rb") as source:
            catalog = read_po(source, locale=po.parts[-3], domain=po.stem)
        mo = target / po.relative_to(LOCALES).with_suffix(".mo")
        mo.parent.mkdir(parents=True, exist_ok=True)
        with mo.open("wb") as compiled:
            write_mo(compiled, catalog)
        written.append(str(mo))
    return written


class BuildWithCatalogs(build_py):
    """``build_py``, then the catalogs: into the build (the wheel), or in place when the
    install is editable."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            compile_catalogs(LOCALES)  # the source tree is what an editable install imports
        else:
            self.catalogs = compile_catalogs(Path(self.build_lib) / "clients" / "locale")

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), *getattr(self, "catalogs", [])]


setup(cmdclass={"build_py": BuildWithCatalogs})
