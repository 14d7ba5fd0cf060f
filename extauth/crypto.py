"""Encryption of OAuth tokens at rest: AES-256-GCM with several keys.

Keys are base64-encoded 32-byte values. The first key encrypts; every key
decrypts, so keys can be rotated: add a new key in front, run
``extauth keys rotate``, then drop the old one. Each stored value carries the
id of its key (the first 8 hex digits of the key's SHA-256), and the
ciphertext is bound to its row and column (associated data), so a value
copied to another row or column does not decrypt.

    <key id>:<base64url(12-byte nonce || ciphertext || tag)>
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV_NAMES = ("EXTAUTH_ENCRYPTION_KEYS", "CODER_EXTERNAL_TOKEN_ENCRYPTION_KEYS")
FILE_ENV = "EXTAUTH_ENCRYPTION_KEY_FILE"


class KeyConfigError(Exception):
    """A configured key is not a base64-encoded 32-byte value."""


class DecryptError(Exception):
    """A stored value cannot be decrypted: its key is missing, or it was tampered with."""

    def __init__(self, key_id: str, reason: str) -> None:
        super().__init__(reason)
        self.key_id = key_id


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def parse_keys(text: str, where: str) -> tuple[bytes, ...]:
    """Comma- or newline-separated base64 keys; each must decode to 32 bytes."""
    keys = []
    for i, item in enumerate(x.strip() for x in text.replace("\n", ",").split(",")):
        if not item:
            continue
        try:
            raw = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise KeyConfigError(f"{where}: key {i + 1} is not valid base64") from None
        if len(raw) != 32:
            raise KeyConfigError(f"{where}: key {i + 1} is {len(raw)} bytes; AES-256 needs 32 "
                            "(make one with: head -c 32 /dev/urandom | base64)")
        keys.append(raw)
    return tuple(keys)


def keys_from_env(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """Keys from EXTAUTH_ENCRYPTION_KEYS (or Coder's name), or a key file."""
    for name in ENV_NAMES:
        if env.get(name, "").strip():
            return parse_keys(env[name], name)
    path = env.get(FILE_ENV, "").strip()
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyConfigError(f"{FILE_ENV}: cannot read {path}: {exc.strerror}") from None
        return parse_keys(text, f"{FILE_ENV} {path}")
    return ()


@dataclass(frozen=True)
class Cipher:
    """Encrypts with the first key, decrypts with any. No keys: values stay plain."""

    keys: tuple[bytes, ...] = field(default=(), repr=False)
    # Decrypt with the keys but write plain values (``extauth keys decrypt``).
    write_plain: bool = False

    @property
    def primary_id(self) -> str:
        """The id new values are written with; "" when they are written plain."""
        return key_id(self.keys[0]) if self.keys and not self.write_plain else ""

    def key_ids(self) -> list[str]:
        return [key_id(k) for k in self.keys]

    def encrypt(self, plain: str, context: str) -> str:
        if not self.primary_id or not plain:
            return plain
        nonce = os.urandom(12)
        sealed = AESGCM(self.keys[0]).encrypt(nonce, plain.encode(), context.encode())
        return f"{self.primary_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, stored_key_id: str, context: str) -> str:
        """The plain value of a stored one; ``stored_key_id`` "" means it is plain."""
        if not stored_key_id or not stored:
            return stored
        kid, _, blob = stored.partition(":")
        key = next((k for k in self.keys if key_id(k) == kid), None)
        if key is None:
            raise DecryptError(kid, f"the token is encrypted with key {kid}, which is not "
                               "configured (EXTAUTH_ENCRYPTION_KEYS)")
        try:
            raw = base64.urlsafe_b64decode(blob.encode())
            return AESGCM(key).decrypt(raw[:12], raw[12:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise DecryptError(kid, f"the token encrypted with key {kid} does not decrypt "
                               "(damaged or moved)") from None
