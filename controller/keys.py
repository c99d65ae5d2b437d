"""The controller's Ed25519 signing key, created on first start and kept under var/."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schedules import signing

logger = logging.getLogger(__name__)


def load_or_create(path: str | Path) -> Ed25519PrivateKey:
    """Load the signing key at ``path``, creating it (mode 0600) when absent."""
    path = Path(path)
    if path.exists():
        return signing.private_key_from_pem(path.read_bytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = signing.generate_private_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(signing.private_key_to_pem(key))
    logger.info("created a new signing key at %s", path)
    return key


def public_text(key: Ed25519PrivateKey) -> str:
    """The public half as base64, for receiver configs."""
    return signing.public_key_to_text(key.public_key())
