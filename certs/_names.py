"""SPIFFE IDs that name Sinergi principals: ``spiffe://<trust-domain>/agency/<agency>/<kind>/<name>``.

The syntax is a strict subset of the SPIFFE ID standard: lowercase, no percent-encoding, and a fixed
path shape, so that exactly one string names each principal and a ledger entry can be matched to a
certificate by plain string comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from certs._errors import CertificateError

__all__ = ["KINDS", "CaScope", "SpiffeId"]

KINDS = ("system", "officer")
"""``system`` is a machine (an agency gateway), ``officer`` a person; policy can tell them apart."""

_SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
_SEGMENT = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Characters that would make the URI carry more than a trust domain and a path.
_FORBIDDEN = (
    ("?", "a query"),
    ("#", "a fragment"),
    ("%", "percent-encoding"),
    ("@", "userinfo"),
    (":", "a port"),
)


@dataclass(frozen=True)
class SpiffeId:
    """The principal named by a certificate's single URI subjectAltName (RFC 5280 4.2.1.6)."""

    trust_domain: str
    agency: str
    kind: str
    name: str

    def __post_init__(self) -> None:
        # Validated on construction too, so str() of any SpiffeId parses back to an equal value.
        if not _TRUST_DOMAIN.fullmatch(self.trust_domain):
            raise CertificateError(
                f"trust domain {self.trust_domain!r} is not a lowercase DNS-like name"
            )
        for field, value in (("agency", self.agency), ("name", self.name)):
            if not _SEGMENT.fullmatch(value):
                raise CertificateError(
                    f"{field} {value!r} must be 1-63 characters of a-z, 0-9 and '-', "
                    "not starting or ending with '-'"
                )
        if self.kind not in KINDS:
            raise CertificateError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``uri``; raise :class:`CertificateError` saying precisely what is wrong."""
        if not uri.startswith(_SCHEME):
            raise CertificateError(f"{uri!r} is not a SPIFFE ID: it must start with {_SCHEME!r}")
        rest = uri[len(_SCHEME) :]
        for char, what in _FORBIDDEN:
            if char in rest:
                raise CertificateError(f"{uri!r} must not contain {what} ({char!r})")
        trust_domain, slash, path = rest.partition("/")
        if not trust_domain:
            raise CertificateError(f"{uri!r} has no trust domain")
        if not slash:
            raise CertificateError(f"{uri!r} has no path; expected /agency/<agency>/<kind>/<name>")
        segments = path.split("/")
        if "" in segments:
            raise CertificateError(f"{uri!r} has an empty path segment (a trailing or double '/')")
        if len(segments) != 4 or segments[0] != "agency":
            raise CertificateError(
                f"{uri!r} has path /{path}; expected exactly /agency/<agency>/<kind>/<name>"
            )
        try:
            return cls(trust_domain, segments[1], segments[2], segments[3])
        except CertificateError as exc:
            raise CertificateError(f"{uri!r}: {exc}") from None

    def __str__(self) -> str:
        return f"{_SCHEME}{self.trust_domain}/agency/{self.agency}/{self.kind}/{self.name}"


_DEVELOPMENT = "development"


@dataclass(frozen=True)
class CaScope:
    """What a CA may issue, recorded as the CA certificate's one URI subjectAltName.

    - ``spiffe://<td>``: the deployment root; it issues agency CAs and server certificates only.
    - ``spiffe://<td>/agency/<agency>``: an agency CA; it issues that agency's identities only.
    - ``spiffe://<td>/development``: the development CA, which issues every identity itself.

    X.509 URI name constraints bind only the host, the trust domain (RFC 5280 4.2.1.10), so the
    exchange checks the agency against this scope on every peer.
    """

    trust_domain: str
    agency: str | None = None
    development: bool = False

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.fullmatch(self.trust_domain):
            raise CertificateError(
                f"trust domain {self.trust_domain!r} is not a lowercase DNS-like name"
            )
        if self.agency is not None and not _SEGMENT.fullmatch(self.agency):
            raise CertificateError(
                f"agency {self.agency!r} must be 1-63 characters of a-z, 0-9 and '-', "
                "not starting or ending with '-'"
            )
        if self.agency is not None and self.development:
            raise CertificateError("a CA scope is an agency or the development CA, not both")

    @classmethod
    def parse(cls, uri: str) -> CaScope:
        if not uri.startswith(_SCHEME):
            raise CertificateError(f"{uri!r} is not a SPIFFE ID: it must start with {_SCHEME!r}")
        trust_domain, _, path = uri[len(_SCHEME) :].partition("/")
        segments = path.split("/") if path else []
        if not segments:
            return cls(trust_domain)
        if segments == [_DEVELOPMENT]:
            return cls(trust_domain, development=True)
        if len(segments) == 2 and segments[0] == "agency":
            return cls(trust_domain, segments[1])
        raise CertificateError(
            f"{uri!r} is not a CA scope: expected spiffe://<td>, spiffe://<td>/agency/<agency> "
            f"or spiffe://<td>/{_DEVELOPMENT}"
        )

    @property
    def kind(self) -> str:
        if self.development:
            return "development"
        return "root" if self.agency is None else "agency"

    def refusal(self, identity: SpiffeId) -> str | None:
        """Why this CA may not vouch for ``identity``, or None when it may."""
        if identity.trust_domain != self.trust_domain:
            return (
                f"issuing CA {self} belongs to trust domain {self.trust_domain!r}, "
                f"not {identity.trust_domain!r}"
            )
        if self.development or self.agency == identity.agency:
            return None
        if self.agency is None:
            return f"issuing CA {self} is the deployment root, which issues no agency identities"
        return (
            f"issuing CA {self} may issue for agency {self.agency!r} only, not {identity.agency!r}"
        )

    def __str__(self) -> str:
        if self.development:
            return f"{_SCHEME}{self.trust_domain}/{_DEVELOPMENT}"
        if self.agency is None:
            return f"{_SCHEME}{self.trust_domain}"
        return f"{_SCHEME}{self.trust_domain}/agency/{self.agency}"
