"""The configuration file: every mistake names the key and its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange import ConfigError
from exchange._config import load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sinergi.toml"
    path.write_text(text)
    return path


def test_a_valid_file_gives_its_values(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen = "0.0.0.0:50051"\nreflection = false\ngrace_seconds = 2\n')
    assert dict(load_config(path).values) == {
        "listen": "0.0.0.0:50051",
        "reflection": False,
        "grace_seconds": 2,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listen = "x:1"\n\n# a comment\n  listn = 3\n', ":4: unknown key 'listn'"),
        ('reflection = true\n"grace_seconds" = "5"\n',
         ":2: 'grace_seconds' must be a number, not a string"),
        ("max_message_bytes = 1.5\n", ":1: 'max_message_bytes' must be an integer, not a number"),
        ("stall_seconds = true\n", ":1: 'stall_seconds' must be a number, not a boolean"),
        ("reflection = 1\n", ":1: 'reflection' must be a boolean, not an integer"),
        ("extra_ledger_keys = [1]\n", ":1: 'extra_ledger_keys' must be a list of strings"),
        ("health_interval_seconds = 0\n", ":1: 'health_interval_seconds' must be greater than 0"),
        ("grace_seconds = -1\n", ":1: 'grace_seconds' must not be negative"),
        ("crl_grace_seconds = -1\n", ":1: 'crl_grace_seconds' must not be negative"),
        ('crl_state = 1\n', ":1: 'crl_state' must be a string, not an integer"),
        ('listen = "a:1"\n\n[server]\nlisten = "b:2"\n', ":3: unknown key 'server'"),
    ],
)  # fmt: skip
def test_mistakes_name_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}{message}" in str(caught.value)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2"):
        load_config(write(tmp_path, 'listen = "a:1"\nlisten = \n'))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
