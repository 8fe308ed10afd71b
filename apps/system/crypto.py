"""Secrets at rest (webhook signing secrets, later SSH keys): Fernet, keyed from SECRET_KEY.

The key is derived from the console's secret key, which lives in the data directory
(or PODIUM_SECRET_KEY), so a copied database alone does not reveal the secrets.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from apps.system.errors import ApplicationError

_KEY_CONTEXT = b"podium secrets at rest v1"


def _fernet() -> Fernet:
    digest = hashlib.sha256(_KEY_CONTEXT + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def secret_encrypt(plaintext: str) -> str:
    """The stored form of ``plaintext``; empty stays empty."""
    if not plaintext:
        return ""
    return _fernet().encrypt(plaintext.encode()).decode()


def secret_decrypt(stored: str) -> str:
    """The plaintext of a stored secret; an error when the secret key has changed since."""
    if not stored:
        return ""
    try:
        return _fernet().decrypt(stored.encode()).decode()
    except InvalidToken as exc:
        raise ApplicationError(
            "A stored secret cannot be decrypted: the console's secret key changed; set it again."
        ) from exc
