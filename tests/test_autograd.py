"""Gradients of the ops: gradcheck in float64 and agreement with the float64 reference."""
import pytest
import torch

import kops
from kops.testing import random_problem

KERNELS = list(kops.KERNELS)  # the kernel table: a new kernel is tested everywhere


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("d", [3, 11])  # direct-difference and GEMM-trick paths
def test_gradcheck_kmv(kernel, d, generator):
    x, z, v, bw = random_problem(7, 9, d, 2, dtype=torch.float64, generator=generator)
    x, z, v = _leaves(x, z, v)
    assert torch.autograd.gradcheck(lambda a, b, c: kops.kmv(a, b, c, kernel, bw), (x, z, v))


@pytest.mark.parametrize("kernel", ["laplacian", "gaussian"])
def test_gradcheck_at_coincident_points(kernel, generator):
    # z holds copies of rows of x: the Laplacian is not differentiable in r there; kops
    # takes the symmetric subgradient 0, which is also what central differences see.
    x, z, v, bw = random_problem(6, 5, 3, 2, dtype=torch.float64, generator=generator)
    z[:3] = x[:3]
    x, z, v = _leaves(x, z, v)
    out = kops.kmv(x, z, v, kernel, bw)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(z.grad).all()
    assert torch.autograd.gradcheck(lambda a, b, c: kops.kmv(a, b, c, kernel, bw), (x, z, v))


def test_laplacian_gradient_is_finite_when_x_is_z(generator):
    x = torch.randn(50, 20, generator=generator, requires_grad=True)
    out = kops.kmv(x, x, torch.ones(50), "laplacian", 3.0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck_kernel_matrix(kernel, generator):
    x, z, _, bw = random_problem(5, 4, 3, 1, dtype=torch.float64, generator=generator)
    x, z = _leaves(x, z)
    assert torch.autograd.gradcheck(lambda a, b: kops.kernel_matrix(a, b, kernel, bw), (x, z))


def test_gradcheck_vector_v(generator):
    x, z, v, bw = random_problem(6, 8, 4, None, dtype=torch.float64, generator=generator)
    x, z, v = _leaves(x, z, v)
    assert torch.autograd.gradcheck(lambda a, b, c: kops.kmv(a, b, c, "gaussian", bw), (x, z, v))


def test_only_requested_gradients_are_computed(generator):
    x, z, v, bw = random_problem(10, 12, 3, 2, generator=generator)
    v.requires_grad_(True)
    kops.kmv(x, z, v, "gaussian", bw).sum().backward()
    assert v.grad is not None and x.grad is None and z.grad is None
