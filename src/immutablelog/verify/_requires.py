"""Imported first by the package: without the ``verify`` extra, ``import immutablelog.verify``
fails naming the extra to install, not just the first module it could not find."""

from immutablelog._extras import require_extra

require_extra("verify", "the verifier", "httpx", "rich")
