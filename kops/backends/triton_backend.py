"""The Triton backend: fused, tiled kernel products on tensor cores (kops/backends/triton_kernels.py).

Numerics follow the torch reference backend: x and z are centred on the mean of z and
multiplied by ``kernel.scale`` by a cheap O((n + m) d) torch pre-pass, the operands are
rounded to the precision mode's format there, and the squared norms are computed in the
accumulation dtype from those rounded values; the kernels then form
``u = max(|xs|^2 + |zs|^2 - 2 xs.zs, 0)`` with ``tl.dot`` (or by direct differences for
d <= DIRECT_MAX_D, which cannot cancel), set u to exactly 0 on the diagonal when x is z, and
never write K. Gradients use the same u and the reference's formulas (Laplacian f'(0) := 0
below the GEMM-trick noise floor).

Precision modes (float32 inputs; float16 / bfloat16 are upcast to float32 first):

=======  ===================================================  ============================
mode     on a GPU                                             in the interpreter
=======  ===================================================  ============================
ieee     ``tl.dot(input_precision="ieee")``: exact fp32       same
tf32     ``tl.dot(input_precision="tf32")`` on tensor cores   operands rounded to tf32,
                                                              exact fp32 products
bf16     operands cast to bfloat16, fp32 accumulation         operands rounded to bf16,
                                                              exact fp32 products
=======  ===================================================  ============================

float64 inputs are computed in float64 (``tl.dot`` in fp64) in every mode, the tf32 / bf16
operands rounded as for float32, as the reference does.

Measured error against float64 in the interpreter (kops.testing.kmv_error, worst over
d in {3, 64, 784}, Gaussian and Laplacian, centred and shifted data; table in
triton_kernels.py): ieee fp32 1.1e-7, tf32 1.7e-4, bf16 2.1e-3, fp64 3e-16. GPU figures are
still to be measured.

Block sizes: a single configuration in the interpreter (which cannot autotune); on a GPU
``triton.autotune`` over BLOCK_N / BLOCK_M / warps / stages keyed on (next power of two of d,
of c, precision, kernel, direct path, dtypes), or with ``KOPS_TRITON_AUTOTUNE=0`` one
heuristic configuration (no timing runs; what GPU test suites should use). BLOCK_D (the d chunk)
and BLOCK_C (the V column tile; wider V runs several column tiles) follow from d and c.
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..precision import PRECISIONS, accumulation_dtype, round_operand
from .numerics import centering_shift, same_points
from .registry import OPS, Backend, Capabilities, Case

__all__ = ["TritonBackend", "DIRECT_MAX_D"]

#: d up to which distances come from direct differences (no GEMM-trick cancellation).
#: A guess until timed on a GPU: the tensor-core distance product is cheaper from small d on.
DIRECT_MAX_D = 16
PREC_CODES = {"ieee": 0, "tf32": 1, "bf16": 2}

_kernels = None
_import_error: str | None = None


def _load():
    """Import triton and the kernels once; None (and _import_error set) when impossible."""
    global _kernels, _import_error
    if _kernels is None and _import_error is None:
        try:
            from . import triton_kernels
        except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
            _import_error = f"triton cannot be imported ({type(exc).__name__}: {exc})"
        else:
            _kernels = triton_kernels
    return _kernels


def _pow2(x: int, lo: int, hi: int) -> int:
    p = 1
    while p < x:
        p *= 2
    return max(lo, min(hi, p))


# ------------------------------------------------------------------------- block choice
def _blocks(d: int, c: int, dtype: torch.dtype, direct: bool) -> dict:
    """Block sizes that do not depend on timing: the d chunk and the V column tile."""
    block_d = _pow2(d, 16, 32 if dtype == torch.float64 else 64)
    return dict(
        BLOCK_D=block_d,
        BLOCK_C=_pow2(c, 16, 64 if dtype == torch.float64 else 128),
        X_RESIDENT=(not direct) and d <= block_d,
    )


def _interp_config() -> dict:
    # Larger tiles mean fewer interpreted tile steps (the interpreter's cost is per step).
    return dict(BLOCK_N=64, BLOCK_M=64)


def _heuristic_config(consts: dict, dtype: torch.dtype) -> dict:
    """One GPU launch configuration without timing (KOPS_TRITON_AUTOTUNE=0).

    A guess from the structure, to be checked against the autotuner's choices on a GPU:
    float64 and the direct path keep register tiles small; the tensor-core paths take
    128-row tiles, more warps for wide V tiles, deeper pipelines when d is looped.
    """
    if dtype == torch.float64:
        return dict(BLOCK_N=64, BLOCK_M=32, num_warps=4, num_stages=2)
    if consts.get("DIRECT"):
        return dict(BLOCK_N=64, BLOCK_M=64, num_warps=4, num_stages=2)
    resident = consts.get("X_RESIDENT", False)
    wide = consts.get("BLOCK_C", 16) >= 64
    return dict(BLOCK_N=128, BLOCK_M=64, num_warps=8 if (wide or not resident) else 4,
                num_stages=2 if resident else 3)


def autotune_enabled() -> bool:
    """Whether GPU launches autotune (default) or use one heuristic configuration.

    ``KOPS_TRITON_AUTOTUNE=0`` turns autotuning off: each new (d, c, kernel, precision, dtype)
    key otherwise compiles and times every configuration once (seconds), which test suites
    with many distinct shapes cannot afford.
    """
    return os.environ.get("KOPS_TRITON_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off")


_TUNED: dict = {}


def _autotuned(name: str, restore: tuple[str, ...]):
    """The GPU autotuned wrapper of a kernel (built on first use; never in the interpreter)."""
    fn = _TUNED.get(name)
    if fn is None:
        import triton

        configs = []
        for bn, bm, warps, stages in ((64, 64, 4, 2), (128, 64, 8, 2), (128, 64, 4, 3), (128, 128, 8, 2),
                                      (64, 32, 4, 3)):
            configs.append(triton.Config(dict(BLOCK_N=bn, BLOCK_M=bm), num_warps=warps, num_stages=stages))
        base = getattr(_load(), name)
        fn = triton.autotune(configs=configs, key=["D_KEY", "C_KEY", "KERNEL", "PREC", "DIRECT"],
                             restore_value=list(restore))(base)
        _TUNED[name] = fn
    return fn


def _launch(name: str, grid_fn, args: tuple, consts: dict, dtype: torch.dtype, restore=()):
    """Run kernel ``name``: one config in the interpreter, autotuned (or heuristic) on a GPU."""
    kernels = _load()
    if kernels.interpreted():
        meta = dict(consts, **_interp_config())
        getattr(kernels, name)[grid_fn(meta)](*args, **meta)
        return
    with torch.cuda.device(args[0].device):  # triton launches on the current device
        if autotune_enabled():
            _autotuned(name, restore)[grid_fn](*args, **consts)
        else:
            meta = dict(consts, **_heuristic_config(consts, dtype))
            getattr(kernels, name)[grid_fn(meta)](*args, **meta)


#: Split the z range over several programs per row tile when fewer than this many programs
#: per SM would run otherwise (few rows of x, e.g. predictions or Nystrom blocks).
_PROGRAMS_PER_SM = 2
#: Never give a split fewer z rows than this (each split re-reads its row tile and writes n x c).
_MIN_ROWS_PER_SPLIT = 2048
_MAX_SPLITS = 64
#: Tests set this to force a split count in the interpreter.
FORCE_SPLITS: int | None = None


def _z_splits(device: torch.device, n: int, m: int, column_tiles: int) -> int:
    """How many z ranges each row tile's work is split into (1: no split)."""
    if FORCE_SPLITS is not None:
        return max(1, min(FORCE_SPLITS, m))
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    programs = triton_cdiv(n, 128) * column_tiles  # the largest autotuned BLOCK_N
    if programs >= _PROGRAMS_PER_SM * sms:
        return 1
    want = triton_cdiv(_PROGRAMS_PER_SM * sms, programs)
    return max(1, min(want, m // _MIN_ROWS_PER_SPLIT, _MAX_SPLITS))


class _Prepared:
    """Centred, scaled, precision-rounded contiguous copies of x and z and their norms."""

    def __init__(self, x, z, kernel, precision, hw):
        self.dtype = accumulation_dtype(x.dtype)
        self.same = same_points(x, z)
        center = centering_shift(z, self.dtype)
        xs = round_operand((x.to(self.dtype) - center).mul_(kernel.scale), precision).contiguous()
        zs = xs if self.same else round_operand((z.to(self.dtype) - center).mul_(kernel.scale), precision).contiguous()
        self.xn = xs.square().sum(1)
        self.zn = self.xn if self.same else zs.square().sum(1)
        if hw and precision == "bf16":  # already bf16 values: halve the bytes the GPU reads
            xs = xs.to(torch.bfloat16)
            zs = xs if self.same else zs.to(torch.bfloat16)
        self.xs, self.zs = xs, zs


class TritonBackend(Backend):
    """Backend "triton": fused flash-style kernel products and gradients in Triton."""

    name = "triton"
    description = (
        "Triton: fused tiled kernel products on tensor cores (ieee/tf32/bf16, fp16-fp64), "
        "K never formed; CPU tensors only in the interpreter (TRITON_INTERPRET=1)"
    )
    capabilities = Capabilities(
        devices=("cuda", "cpu"),
        ops=OPS,
        dtypes=(torch.float16, torch.bfloat16, torch.float32, torch.float64),
        precisions=PRECISIONS,
    )
    auto_rank = {"cuda": 1, "cpu": 1}

    def unavailable_reason(self) -> str | None:
        """None when triton imports, else why not.

        Returns
        -------
        str or None
        """
        if _load() is None:
            return _import_error
        return None

    def unsupported_reason(self, case: Case) -> str | None:
        """None when ``case`` can run here, else a sentence saying why not."""
        if _load() is None:
            return _import_error
        return super().unsupported_reason(case)

    def extra_unsupported_reason(self, case: Case) -> str | None:
        """CPU tensors run only in the Triton interpreter."""
        if case.device.type == "cpu" and not _load().interpreted():
            return ("the Triton backend runs CPU tensors only in the Triton interpreter "
                    "(set TRITON_INTERPRET=1 before importing kops)")
        return None

    def preferred(self, case: Case) -> bool:
        """Never on CPU (the interpreter is a test vehicle), on CUDA whenever supported."""
        return case.device.type == "cuda" and self.unsupported_reason(case) is None

    # ----------------------------------------------------------------------- internals
    @staticmethod
    def _modes(x, precision):
        kernels = _load()
        acc = accumulation_dtype(x.dtype)
        hw = (not kernels.interpreted()) and acc == torch.float32 and precision != "ieee"
        return hw, PREC_CODES[precision]

    def kmv(self, x, z, v, kernel, precision, out, alpha) -> None:
        """``out += alpha * K(x, z) @ v``; out is contiguous (n, c) in the accumulation dtype."""
        hw, prec = self._modes(x, precision)
        prep = _Prepared(x, z, kernel, precision, hw)
        vr = round_operand(v.to(prep.dtype), precision)
        if hw and precision == "bf16":
            vr = vr.to(torch.bfloat16)
        n, d = x.shape
        m, c = v.shape
        direct = d <= DIRECT_MAX_D
        consts = dict(KERNEL=kernel.code, PREC=prec, HW=hw, SAME=prep.same, DIRECT=direct,
                      **_blocks(d, c, prep.dtype, direct))
        block_c = consts["BLOCK_C"]
        split = _z_splits(x.device, n, m, triton_cdiv(c, block_c))
        m_per_split = triton_cdiv(triton_cdiv(m, split), 128) * 128  # whole tiles for any BLOCK_M
        split = triton_cdiv(m, m_per_split)
        # Split partial sums go to a workspace, added below in a fixed order (deterministic).
        target = out if split == 1 else torch.zeros(split, n, c, dtype=out.dtype, device=out.device)

        def grid(meta):
            return (triton_cdiv(n, meta["BLOCK_N"]), triton_cdiv(c, block_c), split)

        args = (prep.xs, prep.zs, vr, prep.xn, prep.zn, target, n, m, d, c, prep.xs.stride(0), prep.zs.stride(0),
                vr.stride(0), vr.stride(1), c, n * c, m_per_split, float(alpha), _pow2(d, 1, 1 << 30),
                _pow2(c, 1, 1 << 30))
        _launch("kmv_fwd_kernel", grid, args, consts, prep.dtype, restore=("O",))
        if split > 1:
            out += target.sum(0)

    def _grad_one(self, a, b, g, v, prep_a_n, prep_b_n, kernel, prec, hw, same, dtype, precision):
        """factor * sum_j f'(u_ij) <g_i, v_j> (a_i - b_j) for the rows of a (prepared inputs)."""
        n, d = a.shape
        m = b.shape[0]
        c = v.shape[1]
        out = torch.empty(n, d, dtype=dtype, device=a.device)
        direct = d <= DIRECT_MAX_D
        blocks = _blocks(d, c, dtype, direct)
        block_dg = blocks["BLOCK_D"]
        eps = torch.finfo(dtype).eps
        consts = dict(KERNEL=kernel.code, PREC=prec, HW=hw, SAME=same, DIRECT=direct,
                      FLOOR=(not kernel.smooth_at_zero) and not direct, BLOCK_DG=block_dg, **blocks)

        def grid(meta):
            return (triton_cdiv(n, meta["BLOCK_N"]), triton_cdiv(d, block_dg))

        args = (a, b, g, v, prep_a_n, prep_b_n, out, n, m, d, c, a.stride(0), b.stride(0), g.stride(0), g.stride(1),
                v.stride(0), v.stride(1), out.stride(0), 2.0 * kernel.scale, 16.0 * eps,
                _pow2(d, 1, 1 << 30), _pow2(c, 1, 1 << 30))
        _launch("kmv_grad_kernel", grid, args, consts, dtype)
        return out

    def kmv_grad_xz(self, x, z, v, grad_out, kernel, precision):
        """Gradients of ``<grad_out, K(x, z) @ v>`` with respect to x and z (accumulation dtype).

        gx = 2 scale (rowsum(Q) xs - Q zs), gz = 2 scale (colsum(Q) zs - Q^T xs) with
        Q_ij = f'(u_ij) <g_i, v_j>; the z gradient is the x kernel with (x, g) and (z, v) swapped.
        """
        hw, prec = self._modes(x, precision)
        prep = _Prepared(x, z, kernel, precision, hw)
        g, vv = grad_out.to(prep.dtype), v.to(prep.dtype)
        args = (kernel, prec, hw, prep.same, prep.dtype, precision)
        gx = self._grad_one(prep.xs, prep.zs, g, vv, prep.xn, prep.zn, *args)
        gz = self._grad_one(prep.zs, prep.xs, vv, g, prep.zn, prep.xn, *args)
        return gx, gz

    def kernel_matrix(self, x, z, kernel, precision):
        """K(x, z), shape (n, m), in the accumulation dtype."""
        hw, prec = self._modes(x, precision)
        prep = _Prepared(x, z, kernel, precision, hw)
        n, d = x.shape
        m = z.shape[0]
        out = torch.empty(n, m, dtype=prep.dtype, device=x.device)
        direct = d <= DIRECT_MAX_D
        blocks = _blocks(d, 1, prep.dtype, direct)
        blocks.pop("BLOCK_C")
        consts = dict(KERNEL=kernel.code, PREC=prec, HW=hw, SAME=prep.same, DIRECT=direct, **blocks)
        kernels = _load()
        meta = dict(consts, BLOCK_N=64, BLOCK_M=64)
        grid = (triton_cdiv(n, 64), triton_cdiv(m, 64))
        # A memory-bound store of K: one fixed tiling is enough (no autotuning).
        with contextlib.nullcontext() if kernels.interpreted() else torch.cuda.device(x.device):
            kernels.kernel_matrix_kernel[grid](prep.xs, prep.zs, prep.xn, prep.zn, out, n, m, d, prep.xs.stride(0),
                                               prep.zs.stride(0), out.stride(0), **meta)
        return out


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)

