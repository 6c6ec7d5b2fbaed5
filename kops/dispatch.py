"""One place that picks the backend for a kernel-product call.

``backend="auto"`` (or the ``KOPS_BACKEND`` environment variable when the call says "auto")
walks the device's preference list and takes the first backend that is available,
supports the case and prefers it; the torch reference backend supports everything and
closes every list. A backend named explicitly is used or raises one clear error.
"""
from __future__ import annotations

import os

from .backends.base import Backend, Case

__all__ = ["BACKEND_NAMES", "register_backend", "get_backend", "select_backend", "backends"]

BACKEND_NAMES = ("auto", "torch", "triton", "cuda", "cpu")

# Preference of "auto" per device type: fastest first, reference last.
AUTO_ORDER = {
    "cuda": ("cuda", "triton", "torch"),
    "cpu": ("cpu", "triton", "torch"),
}

_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend under ``backend.name``."""
    if backend.name not in BACKEND_NAMES:
        raise ValueError(f"backend name {backend.name!r} is not one of {BACKEND_NAMES}")
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    """The registered backends by name."""
    return dict(_BACKENDS)


def check_backend_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_NAMES)}")
    return name.lower()


def get_backend(name: str) -> Backend:
    """The backend called ``name``; raises RuntimeError if it is not available here."""
    name = check_backend_name(name)
    backend = _BACKENDS.get(name)
    if backend is None:
        raise RuntimeError(f"backend {name!r} is not part of this installation")
    reason = backend.unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    return backend


def requested_backend(backend: str) -> str:
    """Apply the KOPS_BACKEND environment variable to a per-call "auto"."""
    backend = check_backend_name(backend)
    if backend == "auto":
        env = os.environ.get("KOPS_BACKEND", "").strip()
        if env:
            try:
                backend = check_backend_name(env)
            except ValueError as exc:
                raise ValueError(f"KOPS_BACKEND: {exc}") from None
    return backend


def select_backend(backend: str, case: Case) -> Backend:
    """Pick the backend for ``case``; ``backend`` is a name from BACKEND_NAMES."""
    backend = requested_backend(backend)
    if backend != "auto":
        chosen = get_backend(backend)
        reason = chosen.unsupported_reason(case)
        if reason is not None:
            raise ValueError(f"backend {backend!r} cannot compute this call: {reason}")
        return chosen
    for name in AUTO_ORDER.get(case.device.type, ("torch",)):
        candidate = _BACKENDS.get(name)
        if candidate is None or candidate.unavailable_reason() is not None:
            continue
        if candidate.unsupported_reason(case) is None and candidate.preferred(case):
            return candidate
    return get_backend("torch")
