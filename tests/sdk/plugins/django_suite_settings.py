"""Settings for running Django's own test suite (``tests/runtests.py`` of its sdist) with the
Django middleware installed: the suite's SQLite settings, plus ours first in the middleware it
always installs, after a counter of the requests that reach the middleware chain
(``django_suite_counter.py``). ``runtests.py`` sets ``MIDDLEWARE`` from its own
``ALWAYS_MIDDLEWARE`` list after importing this module, so the two are put at that list's head.
"""

import os
import sys

from test_sqlite import *  # noqa: F403 (the suite's own settings)

from immutablelog.sdk import DeliveryOptions

OURS = ["django_suite_counter.Counter", "immutablelog.django.AuditMiddleware"]
_always = getattr(sys.modules["__main__"], "ALWAYS_MIDDLEWARE", None)
if _always is not None and OURS[1] not in _always:
    _always[:0] = OURS

IMMUTABLELOG = {
    "service_name": "django-suite",
    "delivery": DeliveryOptions(spool_dir=os.environ["AUDIT_SUITE_SPOOL"]),
}
