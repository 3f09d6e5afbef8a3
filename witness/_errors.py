"""Errors of the witness package: a setup problem or a state that must not be used."""

from __future__ import annotations


class WitnessError(Exception):
    """Base of every error the witness raises before it serves (setup, state)."""


class ConfigError(WitnessError):
    """A file of the witness directory is missing or malformed (key, logs, TLS identity)."""


class StateError(WitnessError):
    """The state is missing, belongs to another witness key, or already exists (init).

    Loud on purpose: a witness that silently started over would cosign a rolled-back or forked
    log (C2SP tlog-witness, add-checkpoint: the witness checks against what it recorded)."""
