"""Errors of the certs package: one base, so callers can catch everything the PKI raises."""


class CertsError(Exception):
    """Base of every error raised by :mod:`certs`."""


class IdentityError(CertsError):
    """An identity or CA directory, or a file in it, is missing, unreadable or invalid.

    The message names the offending path, so an operator can fix it without a debugger.
    """


class CertificateError(CertsError):
    """A certificate, or a name in it, is not acceptable to Sinergi."""
