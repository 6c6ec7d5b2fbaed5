"""Precision modes of the kernel products.

A kernel product has two matrix products: the distance product ``X Z^T`` and the value
product ``K V``. The precision mode says what happens to their inputs; accumulation is
always at least float32.

=======  ==================================================================================
mode     meaning
=======  ==================================================================================
ieee     exact products of the input values: float32 inputs in float32, float64 in float64;
         float16 / bfloat16 inputs are upcast and computed in float32. The default.
tf32     operands of both products rounded to TensorFloat-32 (10 mantissa bits), products
         accumulated in float32 (tensor cores on Ampere and later).
bf16     operands of both products rounded to bfloat16 (8 mantissa bits), products
         accumulated in float32.
=======  ==================================================================================

float64 inputs are computed in float64 in every mode; in the tf32 and bf16 modes their
operands are rounded as for float32. Backends without tensor cores emulate the rounding.
"""
from __future__ import annotations

import torch

PRECISIONS = ("ieee", "tf32", "bf16")

__all__ = ["PRECISIONS", "check_precision", "accumulation_dtype", "round_operand"]


def check_precision(precision) -> str:
    """Validate a precision name and return it in canonical (lower-case) form."""
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return precision.lower()


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which products of ``dtype`` inputs are accumulated (float32 or float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    # Round to nearest (ties to even) at 10 explicit mantissa bits by integer arithmetic on
    # the float32 bit pattern. Non-finite values pass through unchanged.
    f = t.to(torch.float32).contiguous()
    bits = f.view(torch.int32)
    lsb = (bits >> 13) & 1
    rounded = ((bits + 0x0FFF + lsb) & ~0x1FFF).view(torch.float32)
    return torch.where(torch.isfinite(f), rounded, f).to(t.dtype)


def round_operand(t: torch.Tensor, precision: str) -> torch.Tensor:
    """Round a matrix-product operand as the given precision mode does (a copy, or ``t``)."""
    if precision == "ieee":
        return t
    if precision == "tf32":
        return _round_to_tf32(t)
    if precision == "bf16":
        return t.to(torch.bfloat16).to(t.dtype)
    raise ValueError(f"unknown precision {precision!r}")
