"""RQ: the audit context of the code that enqueues a job travels with it.

::

    queue = AuditQueue(connection=redis)            # instead of rq.Queue
    queue.enqueue(send_invoice, 42)
    # worker:  rq worker --job-class immutablelog.rq.AuditJob

A job enqueued while a request is served keeps that request's id and actor in its ``meta``;
while the job runs they are the current audit context again, so ``ImmutableLogClient.record``
in the job names the request that caused it.
"""

from __future__ import annotations

from typing import Any, Final

from rq import Queue
from rq.job import Job

from immutablelog.sdk.context import AuditContext, bound, current

#: The ``job.meta`` key that carries the context.
META_KEY: Final = "immutablelog_context"


class AuditJob(Job):
    """A job that runs in the audit context it was enqueued in."""

    def perform(self) -> Any:
        with bound(AuditContext.from_carried(self.meta.get(META_KEY))):
            return super().perform()


class AuditQueue(Queue):
    """A queue whose jobs carry the current audit context (and are :class:`AuditJob`\\ s)."""

    job_class = AuditJob

    def create_job(self, *args: Any, **kwargs: Any) -> Job:
        context = current()
        if context is not None:
            kwargs["meta"] = {**(kwargs.get("meta") or {}), META_KEY: context.carried()}
        return super().create_job(*args, **kwargs)
