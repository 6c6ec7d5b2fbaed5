"""Loads the compiled extension ``kops._C`` (op schemas, native kernels, build information).

When the extension is missing (for example a source checkout used without building), the op
schemas are defined from :data:`SCHEMAS` instead, so that ``import kops`` and the torch and
Triton backends still work; the native CPU and CUDA backends then report themselves as
unavailable with the reason recorded here.
"""
from __future__ import annotations

import torch

# The same schemas as csrc/ops.cpp (a test checks that the two agree).
SCHEMAS = {
    "kmv": "(Tensor x, Tensor z, Tensor v, str kernel, float bandwidth, str precision, "
    "str backend) -> Tensor",
    "kmv_accumulate": "(Tensor(a!) out, Tensor x, Tensor z, Tensor v, str kernel, "
    "float bandwidth, float alpha, str precision, str backend) -> ()",
    "kmv_grad_xz": "(Tensor x, Tensor z, Tensor v, Tensor grad_out, str kernel, "
    "float bandwidth, str precision, str backend) -> (Tensor, Tensor)",
    "kernel_matrix": "(Tensor x, Tensor z, str kernel, float bandwidth, str precision, "
    "str backend) -> Tensor",
}

try:
    from . import _C  # noqa: F401  (registers TORCH_LIBRARY(kops) and the native kernels)

    EXTENSION_ERROR: str | None = None
    BUILD_INFO: dict = dict(_C.build_info())
except ImportError as exc:  # pragma: no cover - exercised only without a build
    _C = None
    EXTENSION_ERROR = f"the compiled extension kops._C could not be imported ({exc})"
    BUILD_INFO = {}
    _fallback_library = torch.library.Library("kops", "DEF")
    for _name, _schema in SCHEMAS.items():
        _fallback_library.define(_name + _schema)


def extension_loaded() -> bool:
    """Whether the compiled extension was imported."""
    return _C is not None
