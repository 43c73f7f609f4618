"""Bearer access-key check, in constant time, that never logs or keeps a key in clear."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

_SCHEME = "bearer "


class AccessKeys:
    """The accepted keys, held as SHA-256 digests.

    ``check`` hashes the presented key once and compares it with every known digest using
    ``hmac.compare_digest``, without stopping at the first match, so the time taken does not
    depend on which key (if any) matched or on how much of a key was right.
    """

    def __init__(self, keys: Iterable[str], disabled: bool = False) -> None:
        self._digests = [hashlib.sha256(key.encode()).digest() for key in keys]
        self.disabled = disabled

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, authorization: str | None) -> bool:
        """True when the ``Authorization`` header carries an accepted key (or auth is off)."""
        if self.disabled:
            return True
        presented = ""
        if authorization and authorization[: len(_SCHEME)].lower() == _SCHEME:
            presented = authorization[len(_SCHEME) :].strip()
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return matched and presented != ""
