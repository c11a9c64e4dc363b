"""Downloading entries page by page, checked in worker processes or here, applied in order to
the tree being rebuilt."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from immutablelog.verify.checks import ChunkResult, MalformedAnswer, check_page
from immutablelog.verify.client import ClientSettings, LogClient
from immutablelog.verify.engine import ChunkRunner, Progress, Rebuild, result_of
from immutablelog.verify.report import CouldNotCheck

#: The server answers at most 16384 binary entries a call; a power of two keeps each page one
#: aligned subtree.
PAGE_SIZE = 16384

T = TypeVar("T")


def download(
    client: LogClient,
    rebuild: Rebuild,
    runner: ChunkRunner,
    start: int,
    size: int,
    tenant: str,
    concurrency: int,
    progress: Progress,
    content_from: int,
) -> None:
    """Fetch ``[start, size)`` page by page and apply the checked pages in order.

    With worker processes, each worker fetches the pages it checks (over its own client), so
    the page bytes never travel through this process. Without workers (or with a client bound
    to a custom transport), fetch threads only wait on the network (several pages in flight),
    and checks run right here — checking in the fetch threads would only make them fight over
    the GIL.
    """

    def check(raw: bytes, first: int, end: int) -> Future[ChunkResult]:
        # As in fetch_and_check_pages: entries a previous run checked only need hashing.
        return runner.submit(check_page, raw, first, end, tenant, end > content_from)

    settings = client.settings if runner.parallel else None

    def checked_now(first: int, end: int) -> ChunkResult:
        if settings is not None:
            pages = [(first, end)]
            future = runner.submit(fetch_and_check_pages, settings, pages, tenant, content_from)
            (page,) = _checked(future)
            return page
        return _checked(check(client.entries_page(first, end), first, end))

    if settings is not None:
        # Workers fetch the pages they check, a run of consecutive pages per task, fetching
        # the next page while checking one: the server is never idle waiting for a worker to
        # ask, and page bytes never cross a process boundary.
        runs: deque[tuple[list[tuple[int, int]], Future[list[ChunkResult]]]] = deque()
        per_run = _pages_per_run(size - start, runner.workers)
        bounds = [(f, min(f + PAGE_SIZE, size)) for f in range(start, size, PAGE_SIZE)]
        for i in range(0, len(bounds), per_run):
            run = bounds[i : i + per_run]
            runs.append(
                (run, runner.submit(fetch_and_check_pages, settings, run, tenant, content_from))
            )
            while len(runs) > runner.workers:
                _apply_run(rebuild, *runs.popleft(), checked_now, progress)
        while runs:
            _apply_run(rebuild, *runs.popleft(), checked_now, progress)
        return

    # Here worker processes (if any) only check: this process fetches, for them too.
    checking: deque[tuple[int, int, Future[ChunkResult]]] = deque()
    check_depth = 2 * runner.workers if runner.parallel else 1

    def apply_oldest() -> None:
        first, end, future = checking.popleft()
        _apply_page(rebuild, _checked(future), first, end, checked_now, progress)

    pages = iter(range(start, size, PAGE_SIZE))
    fetching: deque[tuple[int, int, Future[bytes]]] = deque()
    fetch_depth = max(1, concurrency) + check_depth
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="fetch") as pool:

        def refill() -> None:
            while len(fetching) < fetch_depth:
                first = next(pages, None)
                if first is None:
                    return
                end = min(first + PAGE_SIZE, size)
                fetching.append((first, end, pool.submit(client.entries_page, first, end)))

        refill()
        try:
            while fetching:
                first, end, raw = fetching.popleft()
                refill()
                checking.append((first, end, check(raw.result(), first, end)))
                while len(checking) >= check_depth:
                    apply_oldest()
            while checking:
                apply_oldest()
        finally:
            for _, _, pending in fetching:
                pending.cancel()


#: Each worker process's own client, by the settings it was opened with, and its one
#: prefetch thread.
_worker_clients: dict[ClientSettings, LogClient] = {}
_worker_prefetch: list[ThreadPoolExecutor] = []


def fetch_and_check_pages(
    settings: ClientSettings, pages: list[tuple[int, int]], tenant: str, content_from: int
) -> list[ChunkResult]:
    """In a worker process: fetch and check consecutive pages over the worker's own client,
    fetching each next page while checking the current one."""
    client = _worker_clients.get(settings)
    if client is None:
        client = _worker_clients[settings] = LogClient.from_settings(settings)
    if not _worker_prefetch:
        _worker_prefetch.append(ThreadPoolExecutor(1, thread_name_prefix="prefetch"))
    prefetch = _worker_prefetch[0]
    results: list[ChunkResult] = []
    upcoming = prefetch.submit(client.entries_page, *pages[0])
    for i, (first, end) in enumerate(pages):
        raw = upcoming.result()
        if i + 1 < len(pages):
            upcoming = prefetch.submit(client.entries_page, *pages[i + 1])
        # Entries below the saved size passed these checks in an earlier run; if the rebuilt
        # root matches, their bytes are those same bytes, so hashing them is enough.
        results.append(check_page(raw, first, end, tenant, end > content_from))
    return results


def _pages_per_run(entries: int, workers: int) -> int:
    """Pages per worker task: long runs keep the prefetch going, enough runs keep every
    worker busy to the end."""
    pages = -(-entries // PAGE_SIZE)
    return max(1, min(8, pages // (2 * workers)))


def _checked(future: Future[T]) -> T:
    try:
        return result_of(future)
    except MalformedAnswer as exc:
        raise CouldNotCheck("malformed_answer", f"GET /v1/entries: {exc}") from None


def _apply_run(
    rebuild: Rebuild,
    pages: list[tuple[int, int]],
    future: Future[list[ChunkResult]],
    checked: Callable[[int, int], ChunkResult],
    progress: Progress,
) -> None:
    results: list[ChunkResult] = _checked(future)
    for (first, end), result in zip(pages, results, strict=True):
        _apply_page(rebuild, result, first, end, checked, progress)


def _apply_page(
    rebuild: Rebuild,
    result: ChunkResult,
    first: int,
    end: int,
    checked: Callable[[int, int], ChunkResult],
    progress: Progress,
) -> None:
    """Apply a page; if the server answered less than asked (its page cap), ask for the rest."""
    position = first
    while True:
        rebuild.apply(result)
        progress.advance(result.received)
        if result.covered_to >= end:
            return
        if result.covered_to <= position:
            rebuild.missing(max(position, result.covered_to), end)
            return
        position = result.covered_to
        result = checked(position, end)
