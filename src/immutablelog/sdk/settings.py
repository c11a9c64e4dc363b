"""The settings of a request-auditing integration, resolved in one place.

Explicit arguments win (even when they equal a default), then the framework's configuration
(Flask's ``app.config``) or, for the WSGI and ASGI middlewares, the environment — both under
the same ``IMMUTABLELOG_*`` names — then the seed's environment variables for the URL and key,
then the defaults. Every integration resolves through here, so they read the same names the
same way.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from immutablelog.sdk.capture import EventBuilder
from immutablelog.sdk.client import API_KEY_ENV_VARS, URL_ENV_VARS, from_env, lease_pipeline
from immutablelog.sdk.options import DeliveryOptions
from immutablelog.sdk.redaction import Redactor, Scrubber
from immutablelog.sdk.sharing import PipelineLease
from immutablelog.sdk.transport import Transport

DEFAULT_ENV: Final = "production"
DEFAULT_SKIP_PATHS: Final = ("/health", "/healthz")
#: Request bodies up to this size are kept for error events (after redaction).
DEFAULT_MAX_BODY_BYTES: Final = 4096

#: Configuration names, in ``app.config`` or the environment. List values in the environment
#: are comma-separated.
CONFIG_NAMES: Final = (
    "IMMUTABLELOG_API_KEY",
    "IMMUTABLELOG_URL",
    "IMMUTABLELOG_SERVICE_NAME",
    "IMMUTABLELOG_ENV",
    "IMMUTABLELOG_SKIP_PATHS",
    "IMMUTABLELOG_TRUSTED_PROXIES",
    "IMMUTABLELOG_REDACT_KEYS",
    "IMMUTABLELOG_ALLOW_KEYS",
    "IMMUTABLELOG_CAPTURE_HEADERS",
    "IMMUTABLELOG_MAX_BODY_BYTES",
    "IMMUTABLELOG_SPOOL_DIR",
    "IMMUTABLELOG_DEAD_LETTER_PATH",
)
_LIST_NAMES: Final = frozenset(
    {
        "IMMUTABLELOG_SKIP_PATHS",
        "IMMUTABLELOG_REDACT_KEYS",
        "IMMUTABLELOG_ALLOW_KEYS",
        "IMMUTABLELOG_CAPTURE_HEADERS",
    }
)


class _Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "unset"


#: Default of arguments that configuration may fill in: an explicit argument wins even when it
#: equals the default (``env="production"`` beats ``IMMUTABLELOG_ENV=staging``).
UNSET: Final = _Unset.UNSET


def environment_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``IMMUTABLELOG_*`` settings found in the environment, lists split on commas."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for name in CONFIG_NAMES:
        value = environ.get(name)
        if value:
            found[name] = (
                tuple(part.strip() for part in value.split(",") if part.strip())
                if name in _LIST_NAMES
                else value
            )
    return found


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """What an integration needs to capture requests and deliver their events."""

    api_key: str
    api_url: str
    service_name: str
    env: str
    skip_paths: frozenset[str]
    trusted_proxies: int
    redact_keys: tuple[str, ...]
    allow_keys: tuple[str, ...]
    capture_headers: tuple[str, ...]
    max_body_bytes: int
    delivery: DeliveryOptions

    def builder(self, scrubber: Scrubber | None = None) -> EventBuilder:
        return EventBuilder(
            service_name=self.service_name,
            env=self.env,
            redactor=Redactor(self.redact_keys, self.allow_keys),
            trusted_proxies=self.trusted_proxies,
            scrubber=scrubber,
        )

    def lease(
        self, builder: EventBuilder, *, owner: object, transport: Transport | None = None
    ) -> PipelineLease:
        """A share of the one pipeline to this destination (see :mod:`.sharing`)."""
        return lease_pipeline(
            builder,
            url=self.api_url,
            api_key=self.api_key,
            service_name=self.service_name,
            options=self.delivery,
            transport=transport,
            owner=owner,
        )


def _chosen(explicit: Any, configured: Any, default: Any) -> Any:
    if explicit is not UNSET and explicit is not None:
        return explicit
    return configured if configured not in (None, "", ()) else default


def resolve_settings(
    config: Mapping[str, Any],
    *,
    default_service_name: str,
    api_key: str = "",
    api_url: str = "",
    service_name: str | _Unset = UNSET,
    env: str | _Unset = UNSET,
    skip_paths: Iterable[str] | None = None,
    trusted_proxies: int | None = None,
    redact_keys: Iterable[str] = (),
    allow_keys: Iterable[str] = (),
    capture_headers: Iterable[str] = (),
    max_body_bytes: int | None = None,
    delivery: DeliveryOptions | None = None,
) -> AuditSettings:
    """Explicit arguments, else ``config``, else the seed's variables, else the defaults.
    Redaction keys add up: the arguments' and the configuration's both apply."""
    options = delivery or DeliveryOptions()
    if options.spool_dir is None and config.get("IMMUTABLELOG_SPOOL_DIR"):
        options = replace(options, spool_dir=str(config["IMMUTABLELOG_SPOOL_DIR"]))
    if options.dead_letter_path is None and config.get("IMMUTABLELOG_DEAD_LETTER_PATH"):
        options = replace(options, dead_letter_path=str(config["IMMUTABLELOG_DEAD_LETTER_PATH"]))
    return AuditSettings(
        api_key=api_key or config.get("IMMUTABLELOG_API_KEY") or from_env(API_KEY_ENV_VARS) or "",
        api_url=api_url or config.get("IMMUTABLELOG_URL") or from_env(URL_ENV_VARS) or "",
        service_name=str(
            _chosen(service_name, config.get("IMMUTABLELOG_SERVICE_NAME"), default_service_name)
        ),
        env=str(_chosen(env, config.get("IMMUTABLELOG_ENV"), DEFAULT_ENV)),
        skip_paths=frozenset(
            _chosen(skip_paths, config.get("IMMUTABLELOG_SKIP_PATHS"), DEFAULT_SKIP_PATHS)
        ),
        trusted_proxies=int(
            _chosen(trusted_proxies, config.get("IMMUTABLELOG_TRUSTED_PROXIES"), 0)
        ),
        redact_keys=(*redact_keys, *config.get("IMMUTABLELOG_REDACT_KEYS", ())),
        allow_keys=(*allow_keys, *config.get("IMMUTABLELOG_ALLOW_KEYS", ())),
        capture_headers=tuple(capture_headers)
        or tuple(config.get("IMMUTABLELOG_CAPTURE_HEADERS", ())),
        max_body_bytes=int(
            _chosen(
                max_body_bytes, config.get("IMMUTABLELOG_MAX_BODY_BYTES"), DEFAULT_MAX_BODY_BYTES
            )
        ),
        delivery=options,
    )
