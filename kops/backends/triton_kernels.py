"""Triton kernels of the "triton" backend (imported only when triton is installed).

Three kernels, all working on inputs that the backend has already centred (on the mean of
z), multiplied by ``kernel.scale`` and rounded to the precision mode's operand format, with
squared norms ``xn``, ``zn`` computed from those same rounded values (kops/backends/
triton_backend.py does this O((n + m) d) pre-pass in torch):

- :func:`kmv_fwd_kernel`: ``O += alpha * K(X, Z) V``, FlashAttention-forward structure
  without the softmax. A program owns BLOCK_N rows of X and BLOCK_C columns of V; it loops
  over Z in tiles of BLOCK_M rows: ``S = X Z^T`` by ``tl.dot`` (d in chunks of BLOCK_D, or
  the X tile held in registers when d <= BLOCK_D), ``u = max(xn + zn - 2 S, 0)``, the kernel
  ``P = f(u)`` in registers, ``acc += P V`` by ``tl.dot``. K is never written. For small d
  (``DIRECT``) ``u`` is summed from direct differences instead (no cancellation).
- :func:`kmv_grad_kernel`: the x gradient of ``<G, K(X, Z) V>``,
  ``gx = factor * (rowsum(Q) * X - Q Z)`` with ``Q_ij = f'(u_ij) <G_i, V_j>``; a program owns
  BLOCK_N rows and BLOCK_DG features of the result. The z gradient is the same kernel with
  (X, G) and (Z, V) swapped.
- :func:`kernel_matrix_kernel`: K(X, Z) tile by tile (for small blocks).

Every load and store is masked (the interpreter has no bounds checks) and row offsets are
formed in int64, so n * d, m * d, n * m and n * c may exceed 2^31.

Constexpr switches
------------------
KERNEL
    0 Gaussian ``exp(-u)``, 1 Laplacian ``exp(-sqrt u)``, 2 Matern 3/2, 3 Matern 5/2.
PREC, HW
    PREC 0 "ieee", 1 "tf32", 2 "bf16". With HW (float32 on a GPU) tf32 is
    ``tl.dot(input_precision="tf32")`` and bf16 casts both operands to bfloat16 (float32
    accumulation). Without HW (the interpreter, or float64 inputs) the reduced modes are
    emulated: the operands are rounded to tf32 / bf16 (X, Z and V by the pre-pass, P here by
    integer arithmetic on the float32 bit pattern, round to nearest even) and multiplied
    exactly. The interpreter cannot run ``tl.dot`` on bfloat16 (wrong results) nor emulate
    tf32 (it computes exact fp32), which is why it always takes this path. The emulation has
    the same operand rounding as the hardware modes; only the products' accumulation order
    differs.
SAME
    x is z: the diagonal of u is set to exactly 0.
DIRECT
    ``u = sum_k (x_k - z_k)^2`` by a loop over the d features (small d).
X_RESIDENT
    d <= BLOCK_D: the X tile is loaded once per program, not once per Z tile.
FLOOR (gradient)
    Laplacian: ``u <= floor_eps * (xn + zn)`` is treated as 0 (GEMM-trick noise; f'(0) := 0).

Measured error (interpreter emulation; kops.testing.kmv_error, i.e. max over outputs of
|out - float64 reference| / (K @ |v|); random normal data, bandwidth sqrt(d), c = 8,
n = m = 200 (100 at d = 784); Gaussian and Laplacian alike, with the data centred at 0 or
shifted by 10 in every feature; the largest value seen):

=========  =========  =========  =========
mode       d = 3      d = 64     d = 784
=========  =========  =========  =========
ieee fp32  7e-8       7e-8       1.1e-7
tf32       1.7e-4     9e-5       1.3e-4
bf16       2.1e-3     7e-4       8e-4
ieee fp64  3e-16      3e-16      2.4e-16
=========  =========  =========  =========

(tolerances of kops.testing: 1e-5, 1e-2, 3e-2, 1e-11). GPU figures are still to be measured:
the hardware modes round the same operands but accumulate in a different order.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..kernels import KERNELS_BY_CODE

__all__ = ["kmv_fwd_kernel", "kmv_grad_kernel", "kernel_matrix_kernel", "interpreted"]


def interpreted() -> bool:
    """Whether the kernels were decorated under TRITON_INTERPRET=1 (run on CPU tensors)."""
    return type(kmv_fwd_kernel).__name__ == "InterpretedFunction"


# ------------------------------------------------------------------------------ helpers
@triton.jit
def _round_bits(p, PREC: tl.constexpr):
    """Round p to tf32 (PREC 1) or bf16 (PREC 2) by integer arithmetic, nearest even.

    Used where the hardware does not round (interpreter, float64). p is finite and >= 0 here
    (kernel values), so the arithmetic shift is harmless.
    """
    if PREC == 1:
        bits = p.to(tl.float32).to(tl.int32, bitcast=True)
        lsb = (bits >> 13) & 1
        out = ((bits + 0x0FFF + lsb) & -8192).to(tl.float32, bitcast=True).to(p.dtype)
    elif PREC == 2:
        bits = p.to(tl.float32).to(tl.int32, bitcast=True)
        lsb = (bits >> 16) & 1
        out = ((bits + 0x7FFF + lsb) & -65536).to(tl.float32, bitcast=True).to(p.dtype)
    else:
        out = p
    return out


@triton.jit
def _mma(a, b, acc, PREC: tl.constexpr, HW: tl.constexpr):
    """acc + a @ b in the precision mode; see the module docstring for PREC / HW."""
    if HW and PREC == 2:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc, out_dtype=tl.float32)
    elif HW and PREC == 1:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="tf32")
    else:
        out = tl.dot(a.to(acc.dtype), b.to(acc.dtype), acc, input_precision="ieee", out_dtype=acc.dtype)
    return out


# One branch per code of the kernel table (Kernel.code in kops/kernels.py); an unknown code
# gives NaN rather than another kernel's values. tests/test_kernel_table.py checks the branches.
@triton.jit
def _profile(u, KERNEL: tl.constexpr):
    """f(u) of the kernel (u = scaled squared distance, >= 0)."""
    if KERNEL == 0:  # gaussian
        k = tl.exp(-u)
    elif KERNEL == 1:  # laplacian
        k = tl.exp(-tl.sqrt(u))
    elif KERNEL == 2:  # matern32
        r = tl.sqrt(u)
        k = (1.0 + r) * tl.exp(-r)
    elif KERNEL == 3:  # matern52
        r = tl.sqrt(u)
        k = (1.0 + r + u * 0.3333333333333333) * tl.exp(-r)
    elif KERNEL == 4:  # cauchy
        k = 1.0 / (1.0 + u)
    else:
        k = u * float("nan")
    return k


@triton.jit
def _profile_derivative(u, KERNEL: tl.constexpr):
    """df/du; the Laplacian's value at u = 0 is taken as 0 (symmetric subgradient)."""
    if KERNEL == 0:  # gaussian
        k = -tl.exp(-u)
    elif KERNEL == 1:  # laplacian
        r = tl.sqrt(u)
        safe = tl.where(r > 0.0, r, 1.0)  # no division by 0, so no inf/NaN to mask
        k = tl.where(r > 0.0, tl.exp(-r) / (-2.0 * safe), 0.0)
    elif KERNEL == 2:  # matern32
        k = -0.5 * tl.exp(-tl.sqrt(u))
    elif KERNEL == 3:  # matern52
        r = tl.sqrt(u)
        k = (1.0 + r) * tl.exp(-r) * (-1.0 / 6.0)
    elif KERNEL == 4:  # cauchy
        w = 1.0 / (1.0 + u)
        k = -w * w
    else:
        k = u * float("nan")
    return k


@triton.jit
def _sqdist(X, Z, xa, xn, rows64, row_ok, cols, cols64, col_ok, d, sxn, szm, ZN, acc_dtype: tl.constexpr,
            PREC: tl.constexpr, HW: tl.constexpr, SAME: tl.constexpr, DIRECT: tl.constexpr,
            X_RESIDENT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """Scaled squared distances u (BLOCK_N, BLOCK_M) of a row tile to a column tile."""
    rows = rows64.to(tl.int32)
    if DIRECT:
        # Differences of the (rounded) operands in the accumulation dtype: cannot cancel.
        u = tl.zeros((BLOCK_N, BLOCK_M), dtype=acc_dtype)
        for k in range(0, d):
            xk = tl.load(X + rows64 * sxn + k, mask=row_ok, other=0.0).to(acc_dtype)
            zk = tl.load(Z + cols64 * szm + k, mask=col_ok, other=0.0).to(acc_dtype)
            diff = xk[:, None] - zk[None, :]
            u += diff * diff
    else:
        s = tl.zeros((BLOCK_N, BLOCK_M), dtype=acc_dtype)
        offs_d = tl.arange(0, BLOCK_D)
        if X_RESIDENT:
            zb = tl.load(Z + cols64[:, None] * szm + offs_d[None, :],
                         mask=col_ok[:, None] & (offs_d[None, :] < d), other=0.0)
            s = _mma(xa, tl.trans(zb), s, PREC, HW)
        else:
            for k0 in range(0, d, BLOCK_D):
                dk = k0 + offs_d
                d_ok = dk < d
                xb = tl.load(X + rows64[:, None] * sxn + dk[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
                zb = tl.load(Z + cols64[:, None] * szm + dk[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)
                s = _mma(xb, tl.trans(zb), s, PREC, HW)
        zn = tl.load(ZN + cols64, mask=col_ok, other=0.0)
        u = tl.maximum(xn[:, None] + zn[None, :] - 2.0 * s, 0.0)
    if SAME:
        u = tl.where(rows[:, None] == cols[None, :], 0.0, u)
    return u


@triton.jit
def _load_x_tile(X, rows64, row_ok, d, sxn, X_RESIDENT: tl.constexpr, BLOCK_D: tl.constexpr):
    """The row tile of X (all d <= BLOCK_D features) when it stays resident, else 0."""
    if X_RESIDENT:
        offs_d = tl.arange(0, BLOCK_D)
        xa = tl.load(X + rows64[:, None] * sxn + offs_d[None, :], mask=row_ok[:, None] & (offs_d[None, :] < d),
                     other=0.0)
    else:
        xa = 0.0
    return xa


# ------------------------------------------------------------------------------ kernels
@triton.jit
def kmv_fwd_kernel(X, Z, V, XN, ZN, O, n, m, d, c, sxn, szm, svm, svc, son, sos, m_per_split, alpha, D_KEY, C_KEY,
                   KERNEL: tl.constexpr, PREC: tl.constexpr, HW: tl.constexpr, SAME: tl.constexpr,
                   DIRECT: tl.constexpr, X_RESIDENT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr):
    """O[s, rows, cols] += alpha * sum_j f(u(x_row, z_j)) V[j, cols] over the z range of split s.

    Grid axis 2 splits the z rows into ranges of m_per_split (when the row tiles alone cannot
    fill the GPU); split s writes its partial sum to slice s of O (slice stride ``sos``), and the
    caller adds the slices in a fixed order (deterministic, no atomics). D_KEY and C_KEY only
    key the autotuning.
    """
    acc_dtype: tl.constexpr = O.dtype.element_ty
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    rows64 = rows.to(tl.int64)
    cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cc < c
    xn = tl.load(XN + rows64, mask=row_ok, other=0.0)
    xa = _load_x_tile(X, rows64, row_ok, d, sxn, X_RESIDENT, BLOCK_D)
    acc = tl.zeros((BLOCK_N, BLOCK_C), dtype=acc_dtype)
    pid_s = tl.program_id(2)
    j_start = pid_s * m_per_split
    j_end = tl.minimum(m, j_start + m_per_split)
    for j0 in range(j_start, j_end, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M)
        col_ok = cols < j_end
        cols64 = cols.to(tl.int64)
        u = _sqdist(X, Z, xa, xn, rows64, row_ok, cols, cols64, col_ok, d, sxn, szm, ZN, acc_dtype,
                    PREC, HW, SAME, DIRECT, X_RESIDENT, BLOCK_N, BLOCK_M, BLOCK_D)
        p = tl.where(col_ok[None, :], _profile(u, KERNEL), 0.0)
        if not HW:
            p = _round_bits(p, PREC)
        vb = tl.load(V + cols64[:, None] * svm + cc[None, :] * svc, mask=col_ok[:, None] & c_ok[None, :], other=0.0)
        acc = _mma(p, vb, acc, PREC, HW)
    optr = O + pid_s.to(tl.int64) * sos + rows64[:, None] * son + cc[None, :]
    omask = row_ok[:, None] & c_ok[None, :]
    # This program is the only writer of its output tile: a plain read-modify-write.
    prev = tl.load(optr, mask=omask, other=0.0)
    tl.store(optr, prev + alpha * acc, mask=omask)


@triton.jit
def kmv_grad_kernel(X, Z, G, V, XN, ZN, OUT, n, m, d, c, sxn, szm, sgn, sgc, svm, svc, son, factor, floor_eps,
                    D_KEY, C_KEY, KERNEL: tl.constexpr, PREC: tl.constexpr, HW: tl.constexpr, SAME: tl.constexpr,
                    DIRECT: tl.constexpr, X_RESIDENT: tl.constexpr, FLOOR: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_DG: tl.constexpr):
    """OUT[rows, feats] = factor * sum_j Q_ij (x_i - z_j)[feats], Q_ij = f'(u_ij) <G_i, V_j>."""
    acc_dtype: tl.constexpr = OUT.dtype.element_ty
    # The value products (G V^T, Q Z) are not rounded to bf16 (Q has no bf16-sized error
    # budget): exact in ieee mode and in the emulation, tf32 on the GPU's reduced modes.
    SEC: tl.constexpr = 1 if (HW and PREC != 0) else 0
    pid_n = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    rows64 = rows.to(tl.int64)
    feats = pid_d * BLOCK_DG + tl.arange(0, BLOCK_DG)
    f_ok = feats < d
    offs_c = tl.arange(0, BLOCK_C)
    xn = tl.load(XN + rows64, mask=row_ok, other=0.0)
    xa = _load_x_tile(X, rows64, row_ok, d, sxn, X_RESIDENT, BLOCK_D)
    rowsum = tl.zeros((BLOCK_N,), dtype=acc_dtype)
    acc = tl.zeros((BLOCK_N, BLOCK_DG), dtype=acc_dtype)
    for j0 in range(0, m, BLOCK_M):
        cols = j0 + tl.arange(0, BLOCK_M)
        col_ok = cols < m
        cols64 = cols.to(tl.int64)
        u = _sqdist(X, Z, xa, xn, rows64, row_ok, cols, cols64, col_ok, d, sxn, szm, ZN, acc_dtype,
                    PREC, HW, SAME, DIRECT, X_RESIDENT, BLOCK_N, BLOCK_M, BLOCK_D)
        if FLOOR:
            zn = tl.load(ZN + cols64, mask=col_ok, other=0.0)
            u = tl.where(u <= floor_eps * (xn[:, None] + zn[None, :]), 0.0, u)
        gv = tl.zeros((BLOCK_N, BLOCK_M), dtype=acc_dtype)
        for c0 in range(0, c, BLOCK_C):
            ck = c0 + offs_c
            ck_ok = ck < c
            gb = tl.load(G + rows64[:, None] * sgn + ck[None, :] * sgc, mask=row_ok[:, None] & ck_ok[None, :],
                         other=0.0)
            vb = tl.load(V + cols64[:, None] * svm + ck[None, :] * svc, mask=col_ok[:, None] & ck_ok[None, :],
                         other=0.0)
            gv = _mma(gb, tl.trans(vb), gv, SEC, HW)
        q = tl.where(col_ok[None, :], _profile_derivative(u, KERNEL) * gv, 0.0)
        rowsum += tl.sum(q, axis=1)
        zb = tl.load(Z + cols64[:, None] * szm + feats[None, :], mask=col_ok[:, None] & f_ok[None, :], other=0.0)
        acc = _mma(q, zb, acc, SEC, HW)
    omask = row_ok[:, None] & f_ok[None, :]
    xb = tl.load(X + rows64[:, None] * sxn + feats[None, :], mask=omask, other=0.0).to(acc_dtype)
    tl.store(OUT + rows64[:, None] * son + feats[None, :], factor * (rowsum[:, None] * xb - acc), mask=omask)


@triton.jit
def kernel_matrix_kernel(X, Z, XN, ZN, K, n, m, d, sxn, szm, skn, KERNEL: tl.constexpr, PREC: tl.constexpr,
                         HW: tl.constexpr, SAME: tl.constexpr, DIRECT: tl.constexpr, X_RESIDENT: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """K[rows, cols] = f(u(x_row, z_col)) for one (BLOCK_N, BLOCK_M) tile."""
    acc_dtype: tl.constexpr = K.dtype.element_ty
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n
    rows64 = rows.to(tl.int64)
    cols = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    col_ok = cols < m
    cols64 = cols.to(tl.int64)
    xn = tl.load(XN + rows64, mask=row_ok, other=0.0)
    xa = _load_x_tile(X, rows64, row_ok, d, sxn, X_RESIDENT, BLOCK_D)
    u = _sqdist(X, Z, xa, xn, rows64, row_ok, cols, cols64, col_ok, d, sxn, szm, ZN, acc_dtype,
                PREC, HW, SAME, DIRECT, X_RESIDENT, BLOCK_N, BLOCK_M, BLOCK_D)
    tl.store(K + rows64[:, None] * skn + cols64[None, :], _profile(u, KERNEL),
             mask=row_ok[:, None] & col_ok[None, :])


# ------------------------------------------------------------------ compile-check variants
_N_KERNELS = len(KERNELS_BY_CODE)


def compile_variants():
    """(kernel function, signature, constexprs, label) for every code path of the kernels.

    Used by the tests to compile each variant for sm_80 / sm_90 with ``triton.compile``
    without a GPU: every numeric mode (dtype x PREC x HW) on each kernel, every distance path
    (direct, X resident, d chunked) and every KERNEL / SAME / FLOOR value at least once.
    """
    # (pointer dtype of X/Z/V, accumulation dtype, PREC, HW)
    modes = [("fp32", "fp32", 0, False), ("fp32", "fp32", 1, True), ("bf16", "fp32", 2, True),
             ("fp64", "fp64", 0, False), ("fp64", "fp64", 1, False), ("fp32", "fp32", 2, False)]
    # (DIRECT, X_RESIDENT, BLOCK_D)
    paths = [(False, True, 64), (False, False, 32), (True, False, 16)]
    # (emulated bf16 rounding appears once, in float32: in float64 it is the same code)
    plans = [(mode, paths[0]) for mode in modes] + [(modes[0], p) for p in paths[1:]] + [(modes[2], paths[1])]
    out = []
    for i, ((op_t, acc_t, prec, hw), (direct, resident, block_d)) in enumerate(plans):
        common = dict(KERNEL=i % _N_KERNELS, PREC=prec, HW=hw, SAME=bool(i % 2), DIRECT=direct, X_RESIDENT=resident,
                      BLOCK_N=64, BLOCK_M=64, BLOCK_D=block_d if acc_t == "fp32" else min(block_d, 32))
        label = f"{op_t}/{acc_t} prec={prec} hw={hw} direct={direct} resident={resident} kernel={i % _N_KERNELS}"
        # forward
        sig = dict(X="*" + op_t, Z="*" + op_t, V="*" + op_t, XN="*" + acc_t, ZN="*" + acc_t, O="*" + acc_t)
        sig.update({k: "i32" for k in ("n", "m", "d", "c", "sxn", "szm", "svm", "svc", "son", "m_per_split")})
        sig.update(sos="i64", alpha="fp32", D_KEY="i32", C_KEY="i32")
        consts = dict(common, BLOCK_C=16 if i % 2 else 64)
        sig.update({k: "constexpr" for k in consts})
        out.append((kmv_fwd_kernel, sig, consts, "kmv_fwd " + label))
        # gradient (G stays in the accumulation dtype); emulated reduced modes round nothing
        # inside it, so they compile to the ieee variant and are not repeated
        if prec != 0 and not hw:
            continue
        sig = dict(X="*" + op_t, Z="*" + op_t, G="*" + acc_t, V="*" + acc_t, XN="*" + acc_t, ZN="*" + acc_t,
                   OUT="*" + acc_t)
        sig.update({k: "i32" for k in ("n", "m", "d", "c", "sxn", "szm", "sgn", "sgc", "svm", "svc", "son")})
        sig.update(factor="fp32", floor_eps="fp32", D_KEY="i32", C_KEY="i32")
        consts = dict(common, FLOOR=(not KERNELS_BY_CODE[i % _N_KERNELS].smooth_at_zero) and not direct, BLOCK_C=16 if i % 2 else 32,
                      BLOCK_DG=common["BLOCK_D"])
        sig.update({k: "constexpr" for k in consts})
        out.append((kmv_grad_kernel, sig, consts, "kmv_grad " + label))
        if i not in (0, 2, 3, 7):  # K's store shares _sqdist: its numeric modes and paths suffice
            continue
        sig = dict(X="*" + op_t, Z="*" + op_t, XN="*" + acc_t, ZN="*" + acc_t, K="*" + acc_t)
        sig.update({k: "i32" for k in ("n", "m", "d", "sxn", "szm", "skn")})
        consts = dict(common)
        sig.update({k: "constexpr" for k in consts})
        out.append((kernel_matrix_kernel, sig, consts, "kernel_matrix " + label))
    return out
