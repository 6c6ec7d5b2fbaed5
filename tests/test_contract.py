"""The backend contract: properties every backend must have, one parametrized suite.

Every backend that can run here is tested (torch, cpu, triton in the interpreter; cuda where
a GPU is present); per-backend files keep only what is specific to one backend.
"""
import pytest
import torch

import kops
from kops.testing import assert_kmv_close, random_problem, reference_kmv

from helpers import ALL_BACKENDS, skip_unless_runs


# ------------------------------------------------------------------------ aliasing
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("alias", ["v", "x", "z", "x_and_z"])
def test_accumulate_into_an_input(backend, alias, generator):
    # out shares memory with an input: the result must be as if the inputs had been copied
    n = 40
    x = torch.randn(n, 3, dtype=torch.float64, generator=generator)
    skip_unless_runs(backend, x, x, 3, "gaussian")
    if alias == "v":  # out is v (x is z so that shapes match)
        x_, z_, v_ = x, x, torch.randn(n, 3, dtype=torch.float64, generator=generator)
        out = v_
    else:  # out is a view of x's (or z's) memory
        buf = torch.randn(n, 3, dtype=torch.float64, generator=generator)
        v_ = torch.randn(n, 3, dtype=torch.float64, generator=generator)
        x_ = buf if alias in ("x", "x_and_z") else x
        z_ = buf if alias in ("z", "x_and_z") else x
        out = buf
    want = out.clone() + 0.5 * reference_kmv(x_.clone(), z_.clone(), v_.clone(), "gaussian", 1.5).to(out.dtype)
    kops.kmv_accumulate(out, x_, z_, v_, "gaussian", 1.5, alpha=0.5, backend=backend)
    torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_accumulate_into_a_view_of_v(backend, generator):
    # out is the first column of v (a strided, partly overlapping view)
    x = torch.randn(30, 4, dtype=torch.float64, generator=generator)
    v = torch.randn(30, 2, dtype=torch.float64, generator=generator)
    skip_unless_runs(backend, x, x, 1, "laplacian")
    out = v[:, 0]
    want = out.clone() + reference_kmv(x, x, v[:, 1].clone(), "laplacian", 2.0).to(out.dtype)
    kops.kmv_accumulate(out, x, x, v[:, 1], "laplacian", 2.0, backend=backend)
    torch.testing.assert_close(v[:, 0], want, rtol=1e-9, atol=1e-9)
