"""Bad input gets a clear error naming the argument; NaN/inf follow the documented policy."""
import math

import pytest
import torch

import kops

X, Z, V = torch.randn(5, 3), torch.randn(4, 3), torch.randn(4, 2)


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((torch.randn(5), Z, V, "gaussian", 1.0), {}, ValueError, "x must be 2-D"),
        ((X, torch.randn(4, 3, 1), V, "gaussian", 1.0), {}, ValueError, "z must be 2-D"),
        ((X, Z, torch.randn(4, 2, 1), "gaussian", 1.0), {}, ValueError, "v must be 1-D or 2-D"),
        ((X, torch.randn(4, 2), V, "gaussian", 1.0), {}, ValueError, "same number of features"),
        ((X, Z, torch.randn(3, 2), "gaussian", 1.0), {}, ValueError, "v must have as many rows as z"),
        ((torch.randn(5, 0), torch.randn(4, 0), V, "gaussian", 1.0), {}, ValueError, "at least one feature"),
        ((X.int(), Z, V, "gaussian", 1.0), {}, TypeError, "x must have a floating dtype"),
        ((X, Z.bool(), V, "gaussian", 1.0), {}, TypeError, "z must have a floating dtype"),
        ((X, Z, V.long(), "gaussian", 1.0), {}, TypeError, "v must have a floating dtype"),
        ((X, Z.double(), V, "gaussian", 1.0), {}, TypeError, "z has dtype torch.float64 but x has"),
        ((X.numpy(), Z, V, "gaussian", 1.0), {}, TypeError, "x must be a torch.Tensor"),
        ((X, Z, V, "gaussian", 0.0), {}, ValueError, "bandwidth must be a positive finite"),
        ((X, Z, V, "gaussian", -2.0), {}, ValueError, "bandwidth must be a positive finite"),
        ((X, Z, V, "gaussian", math.nan), {}, ValueError, "bandwidth must be a positive finite"),
        ((X, Z, V, "gaussian", math.inf), {}, ValueError, "bandwidth must be a positive finite"),
        ((X, Z, V, "gaussian", "wide"), {}, TypeError, "bandwidth must be a positive finite"),
        ((X, Z, V, "gaussian", None), {}, ValueError, "bandwidth is required"),
        ((X, Z, V, "sinc", 1.0), {}, ValueError, "unknown kernel 'sinc'"),
        ((X, Z, V, 3, 1.0), {}, TypeError, "kernel must be"),
        ((X, Z, V, kops.Gaussian(1.0), 2.0), {}, ValueError, "contradicts"),
        ((X, Z, V, "gaussian", 1.0), {"precision": "fp8"}, ValueError, "unknown precision 'fp8'"),
        ((X, Z, V, "gaussian", 1.0), {"backend": "opencl"}, ValueError, "unknown backend 'opencl'"),
    ],
)
def test_bad_input_names_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        kops.kmv(*args, **kwargs)


def test_raw_op_validates_too():
    with pytest.raises(ValueError, match="v must have as many rows as z"):
        torch.ops.kops.kmv(X, Z, torch.randn(3, 2), "gaussian", 1.0, "ieee", "auto")
    with pytest.raises(ValueError, match="bandwidth must be a positive finite"):
        torch.ops.kops.kmv(X, Z, V, "gaussian", -1.0, "ieee", "auto")
    with pytest.raises(ValueError, match="unknown kernel"):
        torch.ops.kops.kernel_matrix(X, Z, "nope", 1.0, "ieee", "auto")


def test_accumulate_checks_out():
    with pytest.raises(ValueError, match=r"out must have shape \(5, 2\)"):
        kops.kmv_accumulate(torch.zeros(5, 3), X, Z, V, "gaussian", 1.0)
    with pytest.raises(TypeError, match="out must have a floating dtype"):
        kops.kmv_accumulate(torch.zeros(5, 2, dtype=torch.int64), X, Z, V, "gaussian", 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_tensors_on_different_devices():
    with pytest.raises(ValueError, match="z is on cuda"):
        kops.kmv(X, Z.cuda(), V, "gaussian", 1.0)


def test_tensors_on_different_devices_meta():
    # The meta device stands in for a second device on CPU-only machines.
    with pytest.raises(ValueError, match="v is on meta"):
        kops.kmv(X, Z, V.to("meta"), "gaussian", 1.0)


def test_explicit_unavailable_backend_raises_one_clear_error():
    reasons = {name: row["reason"] for name, row in kops.info()["backends"].items() if not row["available"]}
    if torch.cuda.is_available() or "cuda" not in reasons:
        pytest.skip("the CUDA backend is available or not registered here")
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
        kops.kmv(X, Z, V, "gaussian", 1.0, backend="cuda")


# ------------------------------------------------------------------ NaN / inf policy
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_x_row_poisons_only_that_row(bad):
    x = X.clone()
    x[2, 1] = bad
    out = kops.kmv(x, Z, V, "gaussian", 1.0)
    assert torch.isnan(out[2]).all()
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(out[keep], kops.kmv(X[keep], Z, V, "gaussian", 1.0))


@pytest.mark.parametrize("where", ["z", "v"])
def test_nan_in_z_or_v_poisons_every_row(where):
    z, v = Z.clone(), V.clone()
    (z if where == "z" else v)[1, 0] = math.nan
    out = kops.kmv(X, z, v, "laplacian", 1.0)
    assert torch.isnan(out[:, 0]).all()


@pytest.mark.parametrize("name", ["x", "z", "v"])
def test_check_finite_names_the_argument(name):
    tensors = {"x": X.clone(), "z": Z.clone(), "v": V.clone()}
    tensors[name][0, 0] = math.inf
    with pytest.raises(ValueError, match=f"{name} contains NaN or infinite values"):
        kops.kmv(tensors["x"], tensors["z"], tensors["v"], "gaussian", 1.0, check_finite=True)


def test_nonfinite_rows_in_kernel_matrix():
    x, z = X.clone(), Z.clone()
    x[1, 0], z[3, 2] = math.inf, math.nan
    k = kops.kernel_matrix(x, z, "gaussian", 1.0)
    assert torch.isnan(k[1]).all() and torch.isnan(k[:, 3]).all()
    keep_rows, keep_cols = [0, 2, 3, 4], [0, 1, 2]
    torch.testing.assert_close(k[keep_rows][:, keep_cols], kops.kernel_matrix(X[keep_rows], Z[keep_cols], "gaussian", 1.0))


def test_nonfinite_policy_holds_for_the_accumulate_form():
    x = X.clone()
    x[0, 0] = math.inf
    out = torch.zeros(5, 2)
    kops.kmv_accumulate(out, x, Z, V, "gaussian", 1.0)
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1:]).all()


def test_huge_finite_inputs_are_not_mistaken_for_nonfinite():
    # The fast finiteness test sums each input; a sum that overflows (here v's) must fall
    # back to the exact test, never poison finite rows.
    x, z = X[:3], Z[:4]
    v = torch.tensor([3e38, 3e38, 1.0, -1.0])
    assert not torch.isfinite(v.sum())
    out = kops.kmv(x, z, v, "gaussian", 0.5, backend="torch")
    expected = kops.kernel_matrix(x.double(), z.double(), "gaussian", 0.5) @ v.double()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=0)
