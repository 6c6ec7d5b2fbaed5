"""What this installation of kops can do: ``kops.info()`` and ``kops info``."""
from __future__ import annotations

import torch

from . import _native
from .dispatch import auto_order, backends


def info() -> dict:
    """Versions, build configuration and the availability of every backend.

    Returns
    -------
    dict with keys ``version``, ``torch``, ``triton`` (or None), ``extension`` (build
    information of kops._C, or the import error), ``devices`` and ``backends`` (name ->
    {"available": bool, "reason": str, "description": str, "supports": str}), ``auto_order``
    (device type -> backend names in the order "auto" tries them).
    """
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - any import failure means "no triton"
        triton_version = None
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    table = {}
    for name, backend in backends().items():
        reason = backend.unavailable_reason()
        table[name] = {
            "available": reason is None,
            "reason": reason or "",
            "description": backend.description,
            "supports": backend.capabilities.describe() if backend.capabilities else "nothing declared",
        }
    from . import __version__

    return {
        "version": __version__,
        "torch": torch.__version__,
        "triton": triton_version,
        "extension": _native.BUILD_INFO if _native.extension_loaded() else {"error": _native.EXTENSION_ERROR},
        "devices": devices,
        "backends": table,
        "auto_order": {k: list(auto_order(k)) for k in ("cuda", "cpu")},
    }


def format_info(report: dict | None = None) -> str:
    """``info()`` as readable text."""
    report = report or info()
    lines = [
        f"kops {report['version']}  (torch {report['torch']}, triton {report['triton'] or 'not installed'})",
        f"devices: {', '.join(report['devices'])}",
        "extension: " + ", ".join(f"{k}={v}" for k, v in report["extension"].items()),
        "backends:",
    ]
    for name, row in report["backends"].items():
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        lines.append(f"  {name:7s} {state}   [{row['description']}]")
        lines.append(f"          supports: {row['supports']}")
    lines.append("auto order: " + "; ".join(f"{k}: {' > '.join(v)}" for k, v in report["auto_order"].items()))
    return "\n".join(lines)
