"""Run-time configuration: the memory budget for temporary blocks.

The budget bounds the bytes of temporary kernel blocks that the torch reference backend and
the solvers form at once; fused backends never form blocks. It is resolved in this order:

1. the :func:`memory_budget` context, which is local to the thread (and asyncio task) that
   enters it (a :class:`contextvars.ContextVar`), so a context in one thread never changes
   another thread's budget;
2. the process-wide value of :func:`set_memory_budget`;
3. the ``KOPS_MEMORY_BUDGET`` environment variable (bytes, or with a suffix: ``512MB``,
   ``2GiB``);
4. a default of 1/8 of the host memory (at most 1 GiB) on CPU and 1/4 of the free memory on
   a CUDA device.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re

import torch

__all__ = ["get_memory_budget", "set_memory_budget", "memory_budget", "parse_bytes"]

_process_budget: int | None = None
# None means "not set in this context": fall through to the process-wide value.
_context_budget: contextvars.ContextVar[int | None] = contextvars.ContextVar("kops_memory_budget", default=None)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text) -> int:
    """Parse ``1234``, ``512MB`` or ``2GiB`` into a positive number of bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"cannot read a memory size from {text!r} (examples: 1000000, 512MB, 2GiB)")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"memory budget must be positive, got {text!r}")
    return value


def set_memory_budget(nbytes) -> None:
    """Set the process-wide memory budget in bytes (or as ``"512MB"``); ``None`` restores the default.

    A :func:`memory_budget` context active in the calling thread still takes precedence.
    """
    global _process_budget
    _process_budget = None if nbytes is None else parse_bytes(nbytes)


@contextlib.contextmanager
def memory_budget(nbytes):
    """Context manager that sets the memory budget for the enclosed code, in this thread only.

    Parameters
    ----------
    nbytes : int or str
        Bytes, or a size such as ``"64MiB"``; ``None`` keeps the enclosing budget.
    """
    if nbytes is None:
        yield
        return
    token = _context_budget.set(parse_bytes(nbytes))
    try:
        yield
    finally:
        _context_budget.reset(token)


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def get_memory_budget(device=None) -> int:
    """The memory budget in bytes for temporaries on ``device`` (default: CPU)."""
    local = _context_budget.get()
    if local is not None:
        return local
    if _process_budget is not None:
        return _process_budget
    env = os.environ.get("KOPS_MEMORY_BUDGET")
    if env:
        return parse_bytes(env)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return max(free // 4, 16 * 2**20)
    return min(_host_memory() // 8, 2**30)
