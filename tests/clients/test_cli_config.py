"""Client settings: flag, then environment, then the configuration file, then the default; and
`sinergi config show` saying which one is in force. Real `sinergi` subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

from tests.clients.conftest import last_json, run

CLEAN = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("SINERGI_", "XDG_CONFIG"))
    and k not in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")  # the language's default
}


def _settings(result: object) -> dict[str, tuple[object, object]]:
    doc = last_json(result)  # type: ignore[arg-type]
    settings = doc["settings"]
    assert isinstance(settings, dict)
    return {name: (s["value"], s["source"]) for name, s in settings.items()}


def test_config_show_names_the_source_of_each_setting(tmp_path: Path) -> None:
    config = tmp_path / "sinergi.toml"
    config.write_text(
        'server = "10.0.0.5:50051"\nidentity = "ids/police"\ndb = "sqlite:///file.db"\n',
        encoding="utf-8",
    )
    env = {
        **CLEAN,
        "SINERGI_CONFIG": str(config),
        "SINERGI_DB": "sqlite:///env.db",
        "SINERGI_SERVER": "10.9.9.9:50051",
    }
    result = run("config", "show", "--server", "flag:1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert _settings(result) == {
        "server": ("flag:1", "flag"),  # flag over env over file
        "db": ("sqlite:///env.db", "env"),  # env over file
        "identity": (str(tmp_path / "ids" / "police"), "file"),  # relative to the file
        "ledger_key": (None, "default"),
        "witness_policy": (None, "default"),
        "lang": ("en", "default"),
    }
    assert last_json(result)["config_file"] == {"path": str(config), "exists": True}

    human = run("config", "show", env=env)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert lines[0] == f"config file: {config}"
    assert "10.9.9.9:50051  (env SINERGI_SERVER)" in lines[1]
    assert f"(file {config})" in lines[2]


def test_without_a_file_the_defaults_apply(tmp_path: Path) -> None:
    env = {**CLEAN, "XDG_CONFIG_HOME": str(tmp_path)}  # no sinergi/config.toml there
    result = run("config", "show", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert _settings(result) == {
        "server": ("127.0.0.1:50051", "default"),
        "db": ("sqlite:///var/sinergi.db", "default"),
        "identity": (None, "default"),
        "ledger_key": (None, "default"),
        "witness_policy": (None, "default"),
        "lang": ("en", "default"),
    }
    assert last_json(result)["config_file"] == {
        "path": str(tmp_path / "sinergi" / "config.toml"),
        "exists": False,
    }


def test_a_command_takes_server_and_identity_from_the_xdg_config_file(
    served: tuple[str, Path, str], tmp_path: Path
) -> None:
    address, pki, _ = served
    home = tmp_path / "xdg"
    (home / "sinergi").mkdir(parents=True)
    (home / "sinergi" / "config.toml").write_text(
        f'server = "{address}"\nidentity = "{pki / "police"}"\n', encoding="utf-8"
    )
    env = {**CLEAN, "XDG_CONFIG_HOME": str(home)}
    listed = run("alert", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert last_json(listed) == {"ok": True, "count": 0, "alerts": []}
    # The environment wins over the file: an unreachable server is tried, and reported.
    moved = run("alert", "list", "--json", env={**env, "SINERGI_SERVER": "127.0.0.1:1"})
    assert moved.returncode == 3


def test_a_broken_config_file_is_a_one_line_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('server = "x"\ncolour = "always"\n', encoding="utf-8")
    env = {**CLEAN, "SINERGI_CONFIG": str(config)}
    result = run("alert", "list", "--identity", str(tmp_path), env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"sinergi: config file {config}: unknown key 'colour' "
        "(keys: server, identity, db, ledger_key, witness_policy, lang)"
    )
    config.write_text("server = [", encoding="utf-8")
    invalid = run("config", "show", env=env)
    assert invalid.returncode == 2
    assert "not valid TOML" in invalid.stderr
    missing = run("config", "show", env={**CLEAN, "SINERGI_CONFIG": str(tmp_path / "none")})
    assert missing.returncode == 2
    assert f"config file {tmp_path / 'none'} does not exist" in missing.stderr
