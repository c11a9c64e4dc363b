"""Fetching what the verifier needs from a server, and nothing more.

Every method returns raw material — note text, page bytes, proof hashes — for the verifier to
check itself; nothing the server says is taken as a verdict. Transient failures (connection
errors, timeouts, 5xx, 408/425/429) are retried as :mod:`immutablelog.retry_policy` says,
honouring ``Retry-After``; anything else becomes :class:`CouldNotCheck` with the server's own
reason, so the caller can tell an outage (exit 2) from evidence (exit 1).
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx
import orjson

from immutablelog import __version__
from immutablelog.entry import ENTRIES_MEDIA_TYPE
from immutablelog.retry_policy import backoff, is_transient, parse_retry_after
from immutablelog.verify.report import CouldNotCheck

#: A person is waiting: a server's Retry-After is honoured up to this long.
_MAX_RETRY_AFTER: Final = 30.0


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What a worker process needs to open its own client to the same log."""

    url: str
    read_key: str
    timeout: float
    retries: int
    backoff: float


class LogClient:
    """A read-only client for one tenant's log (the tenant is the read key's)."""

    def __init__(
        self,
        url: str,
        read_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        # A custom transport (a test's, a proxy's) lives in this process only.
        self.settings = (
            ClientSettings(self.url, read_key, timeout, retries, backoff)
            if transport is None
            else None
        )
        self._http = httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {read_key}",
                "User-Agent": f"immutablelog-verify/{__version__}",
            },
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> LogClient:
        return cls(
            settings.url,
            settings.read_key,
            timeout=settings.timeout,
            retries=settings.retries,
            backoff=settings.backoff,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- endpoints ------------------------------------------------------------------------

    def log_key(self) -> str:
        """``GET /v1/log-key``: the verifier key the server says it signs with."""
        text = self._get("/v1/log-key", {}).text.strip()
        if not text or "\n" in text:
            raise CouldNotCheck("malformed_answer", "GET /v1/log-key did not answer one key line")
        return text

    def handovers(self) -> list[tuple[str, str, str]]:
        """``GET /v1/log-keys``: the ``(old key, new key, checkpoint note)`` handovers of the
        tenant's log, unchecked; none from a server without the endpoint."""
        try:
            body = self._json("/v1/log-keys", {})
        except CouldNotCheck as exc:
            if exc.reason == "not_found":
                return []
            raise
        raw = body.get("handovers")
        if not isinstance(raw, list):
            raise CouldNotCheck("malformed_answer", "GET /v1/log-keys has no list of handovers")
        out: list[tuple[str, str, str]] = []
        for item in raw:
            fields = (
                [item.get(k) for k in ("old_key", "new_key", "checkpoint")]
                if isinstance(item, dict)
                else []
            )
            if len(fields) != 3 or not all(isinstance(f, str) for f in fields):
                raise CouldNotCheck("malformed_answer", "GET /v1/log-keys has a bad handover")
            out.append((str(fields[0]), str(fields[1]), str(fields[2])))
        return out

    def checkpoint(self, size: int | None = None) -> str:
        """``GET /v1/checkpoint``: the signed note text, unchecked."""
        params = {} if size is None else {"size": str(size)}
        return self._get("/v1/checkpoint", params).text

    def cosigned_checkpoint(self, tenant: str) -> str:
        """``GET /tlog/<tenant>/checkpoint``: the newest checkpoint the log's witnesses
        cosigned (C2SP tlog-tiles), unchecked."""
        return self._get(f"/tlog/{quote(tenant, safe='')}/checkpoint", {}).text

    def entries_page(self, start: int, end: int) -> bytes:
        """``GET /v1/entries`` as binary records: the raw body (parsed by ``checks.parse_page``).

        The server may answer fewer entries than asked (its page and byte caps).
        """
        response = self._get(
            "/v1/entries",
            {"start": str(start), "end": str(end)},
            {"Accept": ENTRIES_MEDIA_TYPE},
        )
        media = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != ENTRIES_MEDIA_TYPE:
            raise CouldNotCheck(
                "malformed_answer",
                f"GET /v1/entries answered {media or 'no content type'}, not {ENTRIES_MEDIA_TYPE}",
            )
        return response.content

    def locate_event(self, event_id: str) -> int:
        """Where the server says event ``event_id`` is. Only a hint: ``prove`` then checks
        that the entry at that index, hashed locally, carries this id."""
        body = self._json(f"/v1/events/{quote(event_id, safe='')}", {})
        index = body.get("index")
        if type(index) is not int or index < 0:
            raise CouldNotCheck("malformed_answer", f"GET /v1/events/{event_id} gave no index")
        return index

    def erasure_hint(self, event_id: str) -> int | None:
        """The index of the erasure record the server says covers event ``event_id``, if
        any. Only a hint: ``prove`` fetches that record and checks it."""
        body = self._json(f"/v1/events/{quote(event_id, safe='')}", {})
        event = body.get("event")  # {"event": {..., "erased": {"index", ...}}, "index", ...}
        erased = event.get("erased") if isinstance(event, dict) else None
        index = erased.get("index") if isinstance(erased, dict) else None
        return index if type(index) is int and index >= 0 else None

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        body = self._json("/v1/proofs/inclusion", {"index": str(index), "size": str(size)})
        if body.get("index") != index or body.get("tree_size") != size:
            raise CouldNotCheck(
                "malformed_answer", f"inclusion proof answer is not for index {index}, size {size}"
            )
        return _hashes(body, "inclusion proof")

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        body = self._json("/v1/proofs/consistency", {"first": str(first), "second": str(second)})
        if body.get("first") != first or body.get("second") != second:
            raise CouldNotCheck(
                "malformed_answer", f"consistency proof answer is not for {first} -> {second}"
            )
        return _hashes(body, "consistency proof")

    # --- plumbing -------------------------------------------------------------------------

    def _json(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            body = orjson.loads(self._get(path, params).content)
        except orjson.JSONDecodeError:
            raise CouldNotCheck("malformed_answer", f"GET {path} did not answer JSON") from None
        if not isinstance(body, dict):
            raise CouldNotCheck("malformed_answer", f"GET {path} did not answer a JSON object")
        return body

    def _get(
        self, path: str, params: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.get(path, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise CouldNotCheck(
                        "network", f"cannot reach {self.url}{path}: {exc or type(exc).__name__}"
                    ) from None
                self._sleep(attempt, None)
                attempt += 1
                continue
            if is_transient(response.status_code) and attempt < self.retries:
                self._sleep(attempt, response.headers.get("Retry-After"))
                attempt += 1
                continue
            if response.is_success:
                return response
            raise _refusal(path, response)

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = backoff(attempt, self.backoff, _MAX_RETRY_AFTER)
        time.sleep(max(delay, parse_retry_after(retry_after, cap=_MAX_RETRY_AFTER) or 0.0))


def _refusal(path: str, response: httpx.Response) -> CouldNotCheck:
    """Turn an error answer into the reason the verification could not go on."""
    detail = ""
    try:
        body = orjson.loads(response.content)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            detail = f": {body['message']}"
    except orjson.JSONDecodeError:
        pass
    status = response.status_code
    if status in (401, 403):
        reason = "auth"
    elif status == 404:
        reason = "not_found"
    elif status < 500:
        reason = "rejected"
    else:
        reason = "server_error"
    return CouldNotCheck(reason, f"GET {path} answered {status}{detail}")


def _hashes(body: dict[str, Any], what: str) -> list[bytes]:
    raw = body.get("hashes")
    if not isinstance(raw, list) or not all(isinstance(h, str) for h in raw):
        raise CouldNotCheck("malformed_answer", f"{what} has no list of base64 hashes")
    try:
        return [base64.b64decode(h, validate=True) for h in raw]
    except (binascii.Error, ValueError):
        raise CouldNotCheck("malformed_answer", f"{what} holds invalid base64") from None
