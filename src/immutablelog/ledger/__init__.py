"""The append-only, per-tenant, signed Merkle log and its storage backends."""

from immutablelog.ledger.ledger import (
    COUNT_MATCHES_ENV,
    COUNT_TIMEOUT_ENV,
    DEFAULT_LOG_NAME,
    DEFAULT_TENANT,
    SIGNING_KEY_ENV,
    Ledger,
    LedgerConfig,
    LedgerError,
)
from immutablelog.ledger.sequencer import (
    Accepted,
    AppendResult,
    KeyRevoked,
    LedgerClosed,
    Rejected,
)
from immutablelog.ledger.storage import ApiKey, Storage, StorageError, Tenant

__all__ = [
    "COUNT_MATCHES_ENV",
    "COUNT_TIMEOUT_ENV",
    "DEFAULT_LOG_NAME",
    "DEFAULT_TENANT",
    "SIGNING_KEY_ENV",
    "Accepted",
    "ApiKey",
    "AppendResult",
    "KeyRevoked",
    "Ledger",
    "LedgerClosed",
    "LedgerConfig",
    "LedgerError",
    "Rejected",
    "Storage",
    "StorageError",
    "Tenant",
]
