"""The backend registry: base class, case record, capabilities, registration and selection.

A backend declares what it supports as data (:class:`Capabilities`, a frozen record), and one
generic check turns a case it cannot take into the sentence that errors and ``kops info``
show; a backend that declares nothing supports nothing. Each backend also states its own place
in the automatic order (``auto_rank``, per device type, lower first). :func:`select_backend`
is the one place that picks a backend for a call: ``backend="auto"`` (or the ``KOPS_BACKEND``
environment variable when the call says "auto") walks the registered backends in automatic
order and takes the first that is available, supports the case and prefers it; the torch
reference supports everything and closes every list. A backend named explicitly is used or
raises one clear error.

This module imports nothing of kops except the kernel table (for "every kernel").
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..kernels import KERNELS

__all__ = [
    "BACKEND_NAMES",
    "Case",
    "Capabilities",
    "Backend",
    "register_backend",
    "backends",
    "auto_order",
    "check_backend_name",
    "get_backend",
    "requested_backend",
    "select_backend",
]

BACKEND_NAMES = ("auto", "torch", "triton", "cuda", "cpu")
OPS = ("kmv", "kmv_grad_xz", "kernel_matrix")


@dataclass(frozen=True)
class Case:
    """What the dispatcher knows about a call when it picks a backend.

    op : "kmv", "kmv_grad_xz" or "kernel_matrix"; device, dtype of the inputs; n, m, d the
    sizes of x (n, d) and z (m, d); c the columns of v (0 for kernel_matrix); kernel the
    kernel's name (a key of kops.kernels.KERNELS); precision one of kops.precision.PRECISIONS.
    """

    op: str
    device: torch.device
    dtype: torch.dtype
    n: int
    m: int
    d: int
    c: int
    kernel: str
    precision: str


_DEVICE_NAMES = {"cpu": "CPU", "cuda": "CUDA"}


def _names(values) -> str:
    return ", ".join(str(v).replace("torch.", "") for v in values)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can compute. ``kernels=None`` means every kernel of the kernel table
    (a compiled backend whose profile code covers the table, as tests/test_kernel_table.py
    checks); ``max_d`` / ``max_c`` of None mean no limit."""

    devices: tuple[str, ...]
    ops: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    precisions: tuple[str, ...]
    kernels: tuple[str, ...] | None = None
    max_d: int | None = None
    max_c: int | None = None

    def reason(self, case: Case, backend: str) -> str | None:
        """None when ``case`` is within these capabilities, else a sentence saying why not."""
        who = f"the {backend} backend"
        if case.device.type not in self.devices:
            names = " and ".join(_DEVICE_NAMES.get(dev, dev) for dev in self.devices)
            return f"{who} runs on {names} tensors only, got a {case.device.type} tensor"
        if case.op not in self.ops:
            return f"{who} implements {_names(self.ops)}, not {case.op}"
        if case.dtype not in self.dtypes:
            return f"{who} supports dtypes {_names(self.dtypes)}, not {str(case.dtype).replace('torch.', '')}"
        if case.precision not in self.precisions:
            return f"{who} implements precision {_names(self.precisions)}, not {case.precision!r}"
        kernels = tuple(KERNELS) if self.kernels is None else self.kernels
        if case.kernel not in kernels:
            return f"{who} does not implement the {case.kernel!r} kernel"
        if self.max_d is not None and case.d > self.max_d:
            return f"d = {case.d} exceeds {who}'s limit of {self.max_d}"
        if self.max_c is not None and case.op != "kernel_matrix" and case.c > self.max_c:
            return f"c = {case.c} columns exceed {who}'s limit of {self.max_c}"
        return None

    def describe(self) -> str:
        """One line for ``kops info``."""
        parts = [
            f"devices {_names(self.devices)}",
            f"ops {_names(self.ops)}",
            f"dtypes {_names(self.dtypes)}",
            f"precision {_names(self.precisions)}",
            "kernels " + ("all" if self.kernels is None else _names(self.kernels)),
        ]
        if self.max_d is not None:
            parts.append(f"d <= {self.max_d}")
        if self.max_c is not None:
            parts.append(f"c <= {self.max_c}")
        return "; ".join(parts)


class Backend:
    """Base class of the backends.

    A backend computes, for validated inputs x (n, d), z (m, d), v (m, c) of one floating
    dtype on one device (any strides) and a resolved :class:`kops.kernels.Kernel` with a float
    bandwidth (it reads ``kernel.code``, ``kernel.scale``, ``kernel.smooth_at_zero`` and the
    profile functions, never the name):

    - ``kmv(x, z, v, kernel, precision, out, alpha)``: ``out += alpha * K(x, z) @ v``, with
      ``out`` a contiguous (n, c) tensor in the accumulation dtype (float32, or float64 for
      float64 inputs) that shares no memory with the inputs;
    - ``kmv_grad_xz(x, z, v, grad_out, kernel, precision)``: the gradients of
      ``<grad_out, K(x, z) @ v>`` with respect to x and z, in the accumulation dtype;
    - ``kernel_matrix(x, z, kernel, precision)``: K(x, z) in the accumulation dtype.

    The op layer (kops/ops.py) handles validation, 1-D v, empty sizes, output dtypes,
    aliasing and the NaN policy, so a backend only sees n, m, c, d >= 1.
    """

    name: str = ""
    #: one line for ``kops info``
    description: str = ""
    #: what the backend can compute; None: nothing (a backend must declare its capabilities)
    capabilities: Capabilities | None = None
    #: place in the automatic order per device type (lower first); absent: never automatic
    auto_rank: dict = {}

    def unavailable_reason(self) -> str | None:
        """None when the backend can run on this installation, else why not."""
        return None

    def unsupported_reason(self, case: Case) -> str | None:
        """None when the backend can compute ``case``, else why not (capabilities, then limits)."""
        if self.capabilities is None:
            return f"the {self.name} backend declares no capabilities"
        return self.capabilities.reason(case, self.name) or self.extra_unsupported_reason(case)

    def extra_unsupported_reason(self, case: Case) -> str | None:
        """Limits that the capability record cannot express (default: none)."""
        return None

    def preferred(self, case: Case) -> bool:
        """Whether "auto" should pick this backend for a case it supports (it is fast there)."""
        return True

    def kmv(self, x, z, v, kernel, precision, out, alpha) -> None:
        raise NotImplementedError

    def kmv_grad_xz(self, x, z, v, grad_out, kernel, precision):
        raise NotImplementedError

    def kernel_matrix(self, x, z, kernel, precision):
        raise NotImplementedError


_BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend under ``backend.name``."""
    if backend.name not in BACKEND_NAMES or backend.name == "auto":
        raise ValueError(f"backend name {backend.name!r} is not one of {BACKEND_NAMES[1:]}")
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    """The registered backends by name."""
    return dict(_BACKENDS)


def auto_order(device_type: str) -> tuple[str, ...]:
    """Names of the backends "auto" tries on ``device_type``, in order."""
    ranked = [(b.auto_rank[device_type], name) for name, b in _BACKENDS.items() if device_type in b.auto_rank]
    return tuple(name for _, name in sorted(ranked))


def check_backend_name(name) -> str:
    """The backend name in canonical (lower-case) form; ValueError for an unknown one."""
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
    for name in auto_order(case.device.type):
        candidate = _BACKENDS[name]
        if candidate.unavailable_reason() is not None:
            continue
        if candidate.unsupported_reason(case) is None and candidate.preferred(case):
            return candidate
    return get_backend("torch")
