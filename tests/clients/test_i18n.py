"""Bahasa Indonesia (docs/i18n.md): the catalog is complete, current with the sources and
compiled; the CLI speaks the language chosen (--lang, SINERGI_LANG, the configuration file, the
locale) against a real exchange, and what programs read (--json, gRPC status messages, the
ledger) stays English. The audit report in Indonesian is in test_cli_audit.py."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, check_and_call_extract_file
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from click.testing import CliRunner

import clients._i18n as i18n
from clients._cli import _names, cli
from clients._cli._language import Command, Group
from clients._cli._monitor import alarm_text
from clients._i18n import Choice, choose, from_locale, pgettext, session, translate_help, use
from clients._monitor import Alarm
from tests.clients.conftest import last_json, run, withhold

REPO = Path(__file__).resolve().parents[2]
PO = REPO / "clients" / "locale" / "id" / "LC_MESSAGES" / "sinergi.po"
LOCALE = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")
# The server's commands stay English (docs/i18n.md): they are not the officers' CLI.
SERVER_COMMANDS = {("serve",), ("db",), ("witness", "init"), ("witness", "serve")}
# Words of the Indonesian catalog that must never reach --json, the ledger or a gRPC message.
INDONESIAN = re.compile(
    r"Cekal paspor|Sudah ditindaklanjuti|Aktif\b|peringatan|terverifikasi|belum diberikan|"
    r"entri ledger|tanda terima|ditolak"
)


def _environment(**set_: str) -> dict[str, str]:
    """This process's environment without any language setting, then ``set_``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in LOCALE and not k.startswith(("SINERGI_", "XDG_CONFIG"))
    }
    return {**base, "XDG_CONFIG_HOME": "/nonexistent", **set_}


ID_LOCALE = _environment(LANG="id_ID.UTF-8")
C_LOCALE = _environment(LANG="C.UTF-8")


def _catalog() -> Catalog:
    with PO.open("rb") as source:
        return read_po(source)


def _key(message: Message) -> tuple[str | None, str]:
    msgid = message.id[0] if isinstance(message.id, tuple | list) else message.id
    return message.context, str(msgid)


def _strings(message: Message) -> tuple[str, ...]:
    found = message.string
    return tuple(found) if isinstance(found, tuple | list) else (found,)


def _fields(text: str) -> set[str]:
    return set(re.findall(r"\{[^{}]*\}", text))


def test_every_message_is_translated_and_none_is_fuzzy() -> None:
    catalog = _catalog()
    assert not catalog.fuzzy, "the catalog's header is marked fuzzy: pybabel compile skips it"
    untranslated, fuzzy, fields = [], [], []
    for message in catalog:
        if not message.id:
            continue
        strings = _strings(message)
        if not all(strings):
            untranslated.append(_key(message))
        if message.fuzzy:
            fuzzy.append(_key(message))
        # Each placeholder of the msgid (of its plural, for a plural) is in the translation.
        source = message.id[-1] if isinstance(message.id, tuple) else message.id
        if any(_fields(str(s)) != _fields(str(source)) for s in strings if s):
            fields.append(_key(message))
    assert not untranslated, f"translate these in {PO.relative_to(REPO)}: {untranslated}"
    assert not fuzzy, f"review these and remove their fuzzy flag: {fuzzy}"
    assert not fields, f"these translations lose or add a {{placeholder}}: {fields}"


def _extracted() -> set[tuple[str | None, str]]:
    """Every message of the sources, extracted as `make i18n` extracts them
    (clients/locale/babel.cfg)."""
    with (REPO / "clients" / "locale" / "babel.cfg").open() as mapping:
        method_map, options_map = parse_mapping_cfg(mapping)
    sources = [
        *sorted((REPO / "clients").rglob("*.py")),
        *sorted(Path(click.__file__).parent.glob("*.py")),
    ]
    found = set()
    for path in sources:
        for *_, message, _comments, context in check_and_call_extract_file(
            str(path),
            method_map,
            options_map,
            callback=None,
            keywords=DEFAULT_KEYWORDS,
            comment_tags=(),
            strip_comment_tags=False,
            dirpath=str(REPO),
        ):
            msgid = message[0] if isinstance(message, tuple) else message
            found.add((context, str(msgid)))
    return found


def test_the_catalog_holds_every_message_of_the_sources_and_no_other() -> None:
    extracted = _extracted()
    held = {_key(m) for m in _catalog() if m.id}
    missing = sorted(extracted - held, key=str)
    stale = sorted(held - extracted, key=str)
    assert not missing, f"new messages: run `make i18n` and translate them: {missing}"
    assert not stale, f"messages no source has any more: run `make i18n`: {stale}"
    assert ("category", "PASSPORT_HOLD") in extracted  # the display names are extracted
    assert (None, "Usage:") in extracted  # and click's own messages


def test_the_installed_catalog_is_compiled_from_the_committed_one() -> None:
    compiled = PO.with_suffix(".mo")
    assert compiled.exists(), "no compiled catalog: run `make install`"
    with compiled.open("rb") as source:
        built = {_key(m): _strings(m) for m in read_mo(source) if m.id}
    expected = {_key(m): _strings(m) for m in _catalog() if m.id}
    assert built == expected, "the compiled catalog is older than the .po: run `make install`"


Named = tuple[tuple[str, ...], click.Command]


def _commands() -> Iterator[Named]:
    """Every command and group of the client CLI, lazily loaded ones included."""
    ctx = click.Context(cli)

    def walk(
        group: click.Group, path: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        for name in group.list_commands(ctx):
            if (*path, name) in SERVER_COMMANDS:
                continue
            command = group.get_command(ctx, name)
            assert command is not None, name
            yield (*path, name), command
            if isinstance(command, click.Group):
                yield from walk(command, (*path, name))

    yield from walk(cli, ())


def _words(text: str, count: int = 6) -> str:
    return " ".join(text.split()[:count])


def test_every_client_command_shows_its_help_in_indonesian() -> None:
    """Rendered by click, as `sinergi --lang id ... --help` prints it: the command's help and
    every option's, from the catalog; a command that is not a Command or Group of
    clients._cli._language keeps its English help and fails here."""
    runner = CliRunner()
    before = os.environ.get("LANGUAGE")
    checked = 0
    for path, command in _commands():
        assert isinstance(command, Command | Group), f"{path}: declare it with cls=Command"
        result = runner.invoke(cli, ["--lang", "id", *path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        page = " ".join(result.output.split())
        assert page.startswith("Penggunaan: "), path
        with session():
            use(Choice("id"))
            texts = [command.help or "", *(p.help or "" for p in command.params)]
            translations = [(t, translate_help(t)) for t in texts if t]
        for english, indonesian in translations:
            assert indonesian != english, f"{path}: not translated: {english!r}"
            assert _words(indonesian) in page, (path, _words(indonesian))
        checked += 1
    assert checked > 30
    assert os.environ.get("LANGUAGE") == before  # an in-process run leaves the process as it was


def test_every_enum_value_has_an_indonesian_display_name() -> None:
    with session():
        use(Choice("id"))
        for context, (enum, prefix) in _names.ENUMS.items():
            for name in enum.keys():  # noqa: SIM118 - an enum wrapper, not a dict
                shown = name.removeprefix(prefix)
                assert pgettext(context, shown) != shown, (context, shown)
        for rule in ("volume", "off-hours", "unaddressed-search"):
            assert _names.rule(rule) != rule
        assert _names.category(4) == "Cekal paspor"  # CATEGORY_PASSPORT_HOLD
        assert _names.tlp_meaning(3).startswith("TLP:AMBER (")  # the label is kept
    assert _names.category(4) == "PASSPORT_HOLD"  # English: the enum's own name
    assert _names.tlp_meaning(3) == "TLP:AMBER"


@pytest.mark.parametrize(
    ("flag", "file", "environ", "expected"),
    [
        ("id", "en", {"LANG": "en_US.UTF-8"}, Choice("id", "flag")),
        (None, "id", {"LANG": "C.UTF-8"}, Choice("id", "file")),
        (None, None, {"LANG": "id_ID.UTF-8"}, Choice("id", "locale", "LANG")),
        (None, None, {"LANGUAGE": "fr:id", "LANG": "C"}, Choice("id", "locale", "LANGUAGE")),
        (None, None, {"LANGUAGE": "en:id"}, Choice("en", "locale", "LANGUAGE")),
        (None, None, {"LC_ALL": "C", "LANG": "id_ID"}, Choice("en", "locale", "LC_ALL")),
        (None, None, {"LC_MESSAGES": "in_ID.UTF-8"}, Choice("id", "locale", "LC_MESSAGES")),
        (None, None, {"LANG": "fr_FR.UTF-8"}, Choice("en", "locale", "LANG")),  # silently
        (None, None, {}, Choice()),
        ("fr", None, {"LANG": "id_ID"}, Choice("en", "flag", asked="fr")),  # said once
        (None, "xx", {}, Choice("en", "file", asked="xx")),
    ],
)
def test_the_language_is_the_flag_then_the_file_then_the_locale(
    flag: str | None, file: str | None, environ: dict[str, str], expected: Choice
) -> None:
    assert choose(flag, file, environ) == expected


def test_without_its_compiled_catalog_the_cli_says_so_and_speaks_english(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    with session():
        warning = use(Choice("id", "flag"))
        assert warning is not None
        assert "make install" in warning
        assert i18n.current().language == "en"
        assert i18n._("Usage:") == "Usage:"
    assert from_locale({}) == Choice()


def _lang(result: object) -> tuple[object, object]:
    setting = last_json(result)["settings"]["lang"]  # type: ignore[arg-type, index]
    return setting["value"], setting["source"]  # type: ignore[index]


def test_precedence_as_the_cli_applies_it(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('lang = "id"\n', encoding="utf-8")
    with_file = {"SINERGI_CONFIG": str(config)}
    cases = [
        ([], ID_LOCALE, ("id", "locale")),
        ([], {**C_LOCALE, **with_file}, ("id", "file")),
        ([], {**ID_LOCALE, **with_file, "SINERGI_LANG": "en"}, ("en", "env")),
        (["--lang", "en"], {**ID_LOCALE, **with_file}, ("en", "flag")),
        (["--lang", "id"], {**C_LOCALE, "SINERGI_LANG": "en"}, ("id", "flag")),
    ]
    for flags, env, expected in cases:
        result = run(*flags, "config", "show", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert _lang(result) == expected, (flags, expected)
        assert result.stderr == ""
    human = run("config", "show", env={**C_LOCALE, **with_file})
    assert human.stdout.splitlines()[0].startswith("berkas konfigurasi: ")
    assert "lang            id  (berkas " in human.stdout
    # A language asked for and not spoken: English, and one line on stderr; the locale's: silent.
    asked = run("--lang", "fr", "config", "show", env=ID_LOCALE)
    assert asked.returncode == 0
    assert asked.stderr.splitlines() == [
        "sinergi: warning: language 'fr' is not available (en, id); using English"
    ]
    assert asked.stdout.startswith("config file: ")
    french = run("config", "show", env=_environment(LANG="fr_FR.UTF-8"))
    assert (french.returncode, french.stderr) == (0, "")
    assert french.stdout.startswith("config file: ")
    broken = tmp_path / "broken.toml"
    broken.write_text('lang = "id"\ncolour = "always"\n', encoding="utf-8")
    refused = run("config", "show", env={**ID_LOCALE, "SINERGI_CONFIG": str(broken)})
    assert refused.returncode == 2
    assert "unknown key 'colour'" in refused.stderr


def test_help_and_clicks_own_messages_in_indonesian() -> None:
    publish = run("--lang", "id", "alert", "publish", "--help", env=C_LOCALE)
    assert publish.returncode == 0
    assert publish.stdout.startswith("Penggunaan: sinergi alert publish [OPTIONS]")
    assert "Menerbitkan peringatan; berhasil hanya dengan bukti pencatatan ledger" in publish.stdout
    assert "\n  Contoh:\n" in publish.stdout
    assert "\nOpsi:\n" in publish.stdout
    assert "Tampilkan pesan ini lalu keluar." in publish.stdout
    # The locale chooses before click parses, so the root's own --help is translated too.
    root = run("--help", env=ID_LOCALE)
    assert "\nPerintah:\n" in root.stdout
    assert "Sinergi: pertukaran peringatan antarinstansi" in root.stdout
    bad = run("alert", "list", "--limit", "x", env=ID_LOCALE)
    assert bad.returncode == 2
    assert "Kesalahan: Nilai tidak valid untuk '--limit'" in bad.stderr
    english = run("--lang", "en", "alert", "list", "--limit", "x", env=ID_LOCALE)
    assert "Error: Invalid value for '--limit'" in english.stderr
    # The server's commands stay English; click's frame around them follows the language.
    serve = run("serve", "--help", env=ID_LOCALE)
    assert serve.stdout.startswith("Penggunaan: sinergi serve")
    in_english = run("serve", "--help", env=C_LOCALE)
    assert in_english.stdout.startswith("Usage: sinergi serve")
    assert serve.stdout.split("\n\n")[1] == in_english.stdout.split("\n\n")[1]  # its own help


def test_the_commands_speak_indonesian_and_json_stays_english(
    served: tuple[str, Path, str], tmp_path: Path
) -> None:
    address, pki, db = served
    server = ["--server", address]

    def both(*args: str) -> tuple[dict[str, object], dict[str, object]]:
        """``args`` with --json in Indonesian and in English: what a program reads."""
        found = [run(*args, "--json", env=env) for env in (ID_LOCALE, C_LOCALE)]
        for result in found:
            assert result.returncode == 0, result.stderr
            assert not INDONESIAN.search(result.stdout), result.stdout
        return last_json(found[0]), last_json(found[1])

    published = run(
        "alert", "publish", "--identity", str(pki / "immigration"), *server,
        "--category", "PASSPORT_HOLD", "--to", "police,labour", "--severity", "SEVERE",
        "--subject", "passport=C1234567", "--summary", "Applicant recruited by an unlicensed agent",
        env=ID_LOCALE,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    head, receipt = published.stdout.splitlines()[:2]
    assert head.startswith("diterbitkan ")
    alert_id = head.split()[1]
    assert re.fullmatch(
        r"  entri ledger \d+, tercakup dalam checkpoint bertanda tangan berukuran \d+ "
        r"\(bukti pencatatan terverifikasi\)",
        receipt,
    )
    as_json = run(
        "--lang", "id", "alert", "publish", "--identity", str(pki / "immigration"), *server,
        "--category", "TRAFFICKING_SUSPECT", "--to", "police", "--summary", "second", "--json",
        env=C_LOCALE,
    )  # fmt: skip
    assert as_json.returncode == 0, as_json.stderr
    assert set(last_json(as_json)) == {
        "ok", "alert_id", "seq", "entry_hash", "checkpoint_size", "checkpoint_root"
    }  # fmt: skip

    police = ["--identity", str(pki / "police"), *server]
    listed = run("alert", "list", *police, env=ID_LOCALE)
    assert listed.stdout.splitlines()[0].split() == [
        "KURSOR", "ID", "KEADAAN", "KATEGORI", "TLP", "PENGIRIM", "DIKIRIM", "RINGKASAN"
    ]  # fmt: skip
    assert re.search(rf"{alert_id}\s+Aktif\s+Cekal paspor\s+TLP:AMBER\s+immigration", listed.stdout)
    assert "Terduga pelaku TPPO" in listed.stdout
    indonesian, english = both("alert", "list", *police)
    assert indonesian == english
    assert {a["current"]["category"] for a in english["alerts"]} == {  # type: ignore[union-attr, index]
        "CATEGORY_PASSPORT_HOLD",
        "CATEGORY_TRAFFICKING_SUSPECT",
    }

    shown = run("alert", "show", alert_id, *police, env=ID_LOCALE)
    assert shown.returncode == 0, shown.stderr
    assert "kategori      Cekal paspor" in shown.stdout
    assert "penanganan    TLP:AMBER (terbatas pada instansi penerima" in shown.stdout
    assert "keparahan     Berat" in shown.stdout
    assert "\nriwayat:\n" in shown.stdout
    assert re.search(r"^tanda tangan  terverifikasi: spiffe://", shown.stdout, re.MULTILINE)
    indonesian, english = both("alert", "show", alert_id, *police)
    assert indonesian == english
    assert english["current"]["category"] == "CATEGORY_PASSPORT_HOLD"  # type: ignore[index]
    assert english["current"]["handling"] == "TLP_AMBER"  # type: ignore[index]

    acked = run(
        "alert", "ack", alert_id, *police, "--response", "ACTION_TAKEN", "--case-ref", "LP/A/117",
        env=ID_LOCALE,
    )  # fmt: skip
    assert acked.returncode == 0, acked.stderr
    assert acked.stdout.startswith(f"tanda terima {alert_id}: Sudah ditindaklanjuti\n")
    assert "(bukti pencatatan terverifikasi)" in acked.stdout
    acks = run("alert", "acks", alert_id, "--identity", str(pki / "immigration"), *server,
               env=ID_LOCALE)  # fmt: skip
    assert acks.stdout.splitlines()[0].split()[:3] == ["INSTANSI", "PRINSIPAL", "TANGGAPAN"]
    assert "Sudah ditindaklanjuti  LP/A/117" in acks.stdout
    indonesian, english = both("alert", "acks", alert_id, "--identity", str(pki / "immigration"),
                               *server)  # fmt: skip
    assert indonesian == english
    assert english["acknowledgements"][0]["response"] == "RESPONSE_ACTION_TAKEN"  # type: ignore[index]

    found = run("alert", "search", *police, "--passport", "C1234567", env=ID_LOCALE)
    assert re.search(rf"{alert_id}\s+Aktif\s+Cekal paspor", found.stdout)
    nothing = run("alert", "search", *police, "--passport", "X0000000", env=ID_LOCALE)
    assert nothing.stdout.strip() == "tidak ada peringatan yang ditemukan"

    # A usage error: the person reads Indonesian, a program reads English.
    missing = run(
        "alert", "publish", "--identity", str(pki / "police"), *server, "--category", "OTHER",
        "--summary", "x", "--json", env=ID_LOCALE,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "sinergi: --to belum diberikan (atau berikan seluruh peringatan dengan --file)"
    )
    assert last_json(missing) == {
        "ok": False,
        "error": "missing --to (or give the whole alert with --file)",
    }
    # A refusal is the exchange's gRPC status message, which stays English.
    refused = run(
        "alert", "publish", "--identity", str(pki / "customs"), *server,
        "--category", "PASSPORT_HOLD", "--to", "police", "--summary", "x", env=ID_LOCALE,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "sinergi: PERMISSION_DENIED: agency 'customs' may not publish PASSPORT_HOLD alerts"
    )

    # The auditor's commands, and the ledger they read: its entries stay English.
    key = ["--db", db, "--ledger-key", str(pki / "ledger.vkey")]
    verified = run("ledger", "verify", *key, env=ID_LOCALE)
    assert verified.returncode == 0, verified.stderr
    assert re.match(
        r"ledger utuh: \d+ entri, \d+ checkpoint bertanda tangan, root ", verified.stdout
    )
    assert last_json(run("ledger", "verify", *key, "--json", env=ID_LOCALE))["ok"] is True
    who = run("audit", "who-accessed", alert_id, *key, env=ID_LOCALE)
    assert who.returncode == 0, who.stderr
    lines = who.stdout.splitlines()
    assert re.fullmatch(r"\d+ entri, \d+ prinsipal", lines[0])
    assert lines[1].split()[:3] == ["NO.", "URUT", "WAKTU"]
    assert {"PUBLISH", "READ", "ACK", "SEARCH"} <= {line.split()[2] for line in lines[2:]}
    denied = run("audit", "denied", *key, env=ID_LOCALE)
    assert "PERMISSION_DENIED" in denied.stdout
    assert denied.stdout.splitlines()[0].split()[:3] == ["PRINSIPAL", "STATUS", "JUMLAH"]
    assert run("audit", "anomalies", *key, env=ID_LOCALE).stdout.strip() == "tidak ada anomali"
    indonesian, english = both("audit", "denied", *key)
    assert indonesian["groups"] == english["groups"]
    export = tmp_path / "ledger.jsonl"
    assert run("ledger", "export", "--db", db, "--out", str(export), env=ID_LOCALE).returncode == 0
    recorded = export.read_text(encoding="utf-8")
    assert '"ACK"' in recorded
    assert "may not publish PASSPORT_HOLD alerts" in recorded  # the refusal, as the exchange said
    assert not INDONESIAN.search(recorded)


def test_suppression_alarms_read_as_the_library_writes_them_in_english() -> None:
    """The CLI builds a person's alarm line itself; in English it is the library's (--json)."""
    alarms = [
        Alarm("withheld-entry", 4, raised=1.0),
        Alarm("not-received", 2, 7, "PUBLISH", "a1", "a1", "2026-12-07T09:14:03Z", 1.0),
    ]
    for alarm in alarms:
        assert str(alarm_text(alarm)) == alarm_text(alarm).translated() == alarm.describe()
    with session():
        use(Choice("id"))
        assert alarm_text(alarms[1]).translated().startswith("ALARM PENAHANAN: PUBLISH a1 ")
        assert str(alarm_text(alarms[1])) == alarms[1].describe()


def test_the_monitor_proofs_and_related_alerts_speak_indonesian(
    served: tuple[str, Path, str], tmp_path: Path
) -> None:
    address, pki, db = served
    immigration = ["--identity", str(pki / "immigration"), "--server", address]
    police = ["--identity", str(pki / "police"), "--server", address]

    def publish(summary: str) -> str:
        published = run(
            "alert", "publish", *immigration, "--category", "PASSPORT_HOLD", "--to", "police",
            "--subject", "passport=C7654321", "--summary", summary, "--json", env=C_LOCALE,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        return str(last_json(published)["alert_id"])

    kept, withheld = publish("reaches police"), publish("kept from police")
    shown = run("--lang", "id", "alert", "show", kept, *police, env=C_LOCALE)
    assert "\nterkait (memiliki pengenal subjek yang sama):\n" in shown.stdout
    assert re.search(rf"^  {withheld}\s+Cekal paspor\s+immigration\s.*\spassport$",
                     shown.stdout, re.MULTILINE)  # fmt: skip
    # An insider removes police's recipient row: police's monitor raises the alarm.
    withhold(db, withheld, "police")
    monitored = run("--lang", "id", "monitor", *police, "--grace", "0", env=C_LOCALE)
    assert monitored.returncode == 1, monitored.stderr
    head, *alarms = monitored.stdout.splitlines()
    assert re.fullmatch(
        r"diperiksa sampai checkpoint \S+ berukuran \d+ yang ditandatangani bersama \(dari 0\): "
        r"2 entri ditujukan ke instansi Anda, 1 diterima",
        head,
    )
    warning, alarm_line = alarms  # this exchange has no witnesses: said, before the alarm
    assert warning.startswith("peringatan: tidak ada kebijakan saksi: checkpoint ini hanya ")
    assert re.fullmatch(
        rf"ALARM PENAHANAN: PUBLISH {withheld} \(rangkaian {withheld}\), tercatat di entri ledger "
        r"\d+ pada \S+ untuk instansi Anda, tetapi tidak pernah sampai",
        alarm_line,
    )
    as_json = run("monitor", *police, "--grace", "0", "--json", env=ID_LOCALE)
    assert as_json.returncode == 1
    assert not INDONESIAN.search(as_json.stdout)
    [alarm] = last_json(as_json)["alarms"]  # type: ignore[misc]
    assert alarm["message"].startswith(f"SUPPRESSION: PUBLISH {withheld} (thread ")  # type: ignore[index]

    bundle = tmp_path / "alert.proof.json"
    made = run("alert", "proof", kept, *police, "-o", str(bundle), env=ID_LOCALE)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith(f"Peringatan {kept} ditandatangani oleh spiffe://")
    assert "(bukti terverifikasi)" in made.stdout
    assert "tanpa kebijakan saksi: tanda tangan bersama tidak diperiksa" in made.stdout
    checked = run("--lang", "id", "ledger", "verify-proof", str(bundle), "--identity",
                  str(pki / "police"), env=C_LOCALE)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert re.fullmatch(
        rf"bukti pencatatan utuh: Peringatan {kept} ditandatangani oleh \S+ "
        r"\(tanda tangan terverifikasi\)",
        lines[0],
    )
    assert re.fullmatch(r"  entri ledger \d+, PUBLISH pada \S+ \(bukti terverifikasi\)", lines[1])
    english = run("--lang", "id", "ledger", "verify-proof", str(bundle), "--identity",
                  str(pki / "police"), "--json", env=C_LOCALE)  # fmt: skip
    assert not INDONESIAN.search(english.stdout)
    assert last_json(english)["alert_id"] == kept
