"""Errors of the ledger package: one base, so callers can catch everything the ledger raises."""


class LedgerError(Exception):
    """Base of every error raised by :mod:`ledger`."""


class EncodingError(LedgerError):
    """An entry is not in canonical form, or a value cannot be encoded canonically."""


class ProofError(LedgerError):
    """An inclusion or consistency proof does not verify (RFC 9162 section 2.1.3.2, 2.1.4.2)."""


class NoteError(LedgerError):
    """A signed note or checkpoint is malformed or has no verifying signature (C2SP signed-note)."""


class StorageError(LedgerError):
    """The ledger store (:mod:`ledger.store`) refused or failed an operation."""


class VerificationError(LedgerError):
    """The ledger does not verify; ``seq`` names the first entry found wrong, when there is one."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class ForkError(VerificationError):
    """A checkpoint is not consistent with one verified before: the ledger was rewritten or
    rolled back (RFC 9162 section 2.1.4)."""


class PolicyError(LedgerError):
    """A witness policy file is malformed (C2SP tlog-policy)."""


class QuorumError(VerificationError):
    """A checkpoint lacks the cosignatures its witness policy requires."""


class WitnessRefusal(LedgerError):
    """A witness refuses an add-checkpoint request (C2SP tlog-witness): ``status`` is the HTTP
    status it answers; ``size`` its latest cosigned size, for a 409."""

    def __init__(self, status: int, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.size = size
