"""Shared benchmark harness: machine description, timing, JSON output.

Every benchmark script in bench/ writes one JSON document::

    {"machine": machine_info(), "benchmark": name, "config": {...}, "rows": [...]}

Timing: a warm-up call (compilation, caches, autotuning) and then ``repeats`` timed calls;
on CUDA each call is timed with CUDA events after a synchronisation, on CPU with
perf_counter. Rows report the median and the minimum in seconds.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """The repository's HEAD commit, with "-dirty" when tracked files are modified."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return (head or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """Where and with what a benchmark ran (JSON-serialisable)."""
    import kops

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": triton_version,
        "kops": kops.__version__,
        "kops_extension": kops.info()["extension"],
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    return info


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, *, device="cpu", warmup: int = 1, repeats: int = 5, max_seconds: float | None = None) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``repeats`` timed ones.

    ``max_seconds`` stops repeating once that much time was spent timing (at least one timed
    call is always made). Returns {"median_s", "min_s", "times_s", "repeats"}.
    """
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    spent = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
        times.append(seconds)
        spent += seconds
        if max_seconds is not None and spent >= max_seconds:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "repeats": len(times)}


def write_json(payload: dict, path) -> Path:
    """Write ``payload`` to ``path`` (a file, or a directory: a dated name is made there)."""
    path = Path(path)
    if path.suffix != ".json":
        path.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = path / f"{payload.get('benchmark', 'bench')}_{stamp}.json"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    return path


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows as a fixed-width text table; columns are (key, header, format spec)."""
    header = " ".join(f"{h:>{max(len(h), 9)}}" for _, h, _ in columns)
    lines = [header]
    for row in rows:
        cells = []
        for key, h, spec in columns:
            value = row.get(key)
            text = "-" if value is None else (format(value, spec) if spec else str(value))
            cells.append(f"{text:>{max(len(h), 9)}}")
        lines.append(" ".join(cells))
    return "\n".join(lines)
