"""Loads the compiled extension ``kops._C`` (native kernels, build information).

The extension registers only the private native ops (``kops::_cpu_*``, ``kops::_cuda_*``, each
backend in its own TORCH_LIBRARY_FRAGMENT); the public op schemas are defined once, in Python,
next to their implementations (kops/ops.py). When the extension is missing (for example a
source checkout used without building), ``import kops`` and the torch and Triton backends
still work; the native CPU and CUDA backends then report themselves as unavailable with the
reason recorded here.
"""
from __future__ import annotations

try:
    from . import _C  # noqa: F401  (registers the native kernels)

    EXTENSION_ERROR: str | None = None
    BUILD_INFO: dict = dict(_C.build_info())
except ImportError as exc:  # pragma: no cover - exercised only without a build
    _C = None
    EXTENSION_ERROR = f"the compiled extension kops._C could not be imported ({exc})"
    BUILD_INFO = {}


def extension_loaded() -> bool:
    """Whether the compiled extension was imported."""
    return _C is not None
