"""Bearer access keys -> tenant, in constant time, never logging or keeping a key in clear."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from config import Settings
from config.loading import reveal
from config.tenants import DEFAULT_TENANT

_SCHEME = "bearer "


def digest(key: str) -> bytes:
    """SHA-256 of a key, the only form in which keys are kept."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class AccessKeys:
    """Accepted keys as SHA-256 digests, each belonging to a tenant.

    ``tenant_of`` hashes the presented key once and compares the digest with **every** known digest
    using ``hmac.compare_digest``, with no early exit, so the time taken does not depend on which
    key (if any) matched or on how much of a key was right. A wrong key and a right key run the same
    code path; only the final ``if`` differs.
    """

    def __init__(self, entries: Iterable[tuple[bytes, str]], disabled: bool = False) -> None:
        self._entries = list(entries)
        self.disabled = disabled

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessKeys:
        """Keys of the default tenant and of every configured tenant (clear, digest or file)."""
        entries = [(digest(key), DEFAULT_TENANT) for key in reveal(settings.access_keys)]
        for tenant in settings.tenants:
            entries += [(digest(key), tenant.name) for key in reveal(tenant.access_keys) + tenant.file_keys()]
            entries += [(bytes.fromhex(hexdigest), tenant.name) for hexdigest in tenant.access_key_sha256]
        return cls(entries, disabled=settings.auth_disabled)

    def __len__(self) -> int:
        return len(self._entries)

    def tenant_of(self, authorization: str | None) -> str | None:
        """The tenant whose key the ``Authorization`` header carries, or None (answer 401)."""
        if self.disabled:
            return DEFAULT_TENANT
        presented = ""
        if authorization and authorization[: len(_SCHEME)].lower() == _SCHEME:
            presented = authorization[len(_SCHEME) :].strip()
        wanted = digest(presented)
        found: str | None = None
        for known, tenant in self._entries:
            if hmac.compare_digest(wanted, known) and found is None:
                found = tenant
        return found if presented else None
