"""Backend selection for the ops: the public face of :mod:`kops.backends.registry`.

``backend="auto"`` (or the ``KOPS_BACKEND`` environment variable when the call says "auto")
walks the backends in automatic order and takes the first that is available, supports the
case and prefers it; the torch reference supports everything and closes every list. A backend
named explicitly is used or raises one clear error. Importing this module registers the
backends.
"""
from __future__ import annotations

from . import backends as _backends  # noqa: F401  (registers the backends)
from .backends.registry import (
    BACKEND_NAMES,
    auto_order,
    backends,
    check_backend_name,
    get_backend,
    register_backend,
    requested_backend,
    select_backend,
)

__all__ = [
    "BACKEND_NAMES",
    "auto_order",
    "backends",
    "check_backend_name",
    "get_backend",
    "register_backend",
    "requested_backend",
    "select_backend",
]
