"""Token formats: ``<scheme>_<prefix>_<secret>``; only a SHA-256 digest is stored.

API tokens use the scheme ``pdm``; the monitoring layer mints join tokens (``pdj``)
and node tokens (``pdn``) the same way.

The prefix identifies the row without a scan; the digest is compared in constant
time. Tokens carry 256 bits of randomness, so a fast hash is enough.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_SCHEME = "pdm"  # noqa: S105  (the token scheme name, not a secret)
PREFIX_BYTES = 6
SECRET_BYTES = 32


@dataclass(frozen=True)
class MintedToken:
    plaintext: str
    prefix: str
    digest: str


def token_digest(plaintext: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def token_mint(scheme: str = TOKEN_SCHEME) -> MintedToken:
    """A new random token of ``scheme``, its lookup prefix and digest."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    plaintext = f"{scheme}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return MintedToken(plaintext=plaintext, prefix=prefix, digest=token_digest(plaintext))


def token_prefix(plaintext: str, scheme: str = TOKEN_SCHEME) -> str | None:
    """The lookup prefix of a presented token, or None when it is not of ``scheme``'s format."""
    presented, _, rest = plaintext.partition("_")
    prefix, _, secret = rest.partition("_")
    if presented != scheme or len(prefix) != PREFIX_BYTES * 2 or not secret:
        return None
    return prefix


def token_matches(plaintext: str, digest: str) -> bool:
    """Constant-time comparison of a presented token with a stored digest."""
    return hmac.compare_digest(token_digest(plaintext), digest)
