"""The op layer's own behaviour: entry points, kernel objects, rounding modes, kmv_accumulate.

What every backend must do is the backend contract, tests/test_contract.py.
"""
import pytest
import torch

import kops
from kops.testing import kmv_error, random_problem


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_modes_really_round(precision, generator):
    # The reference backend emulates tensor-core rounding: its error must be of the order
    # of that rounding, far above the exact mode's.
    x, z, v, bw = random_problem(200, 300, 59, 2, generator=generator)
    exact = kmv_error(kops.kmv(x, z, v, "gaussian", bw, backend="torch"), x, z, v, "gaussian", bw)
    rounded = kmv_error(kops.kmv(x, z, v, "gaussian", bw, precision=precision, backend="torch"),
                        x, z, v, "gaussian", bw)
    unit = {"tf32": 2.0**-11, "bf16": 2.0**-9}[precision]
    assert rounded > 20 * exact
    assert unit / 16 < rounded < 16 * unit


def test_accumulate_into_a_vector_and_into_a_view(generator):
    x, z, v, bw = random_problem(50, 60, 4, None, generator=generator)
    out = torch.zeros(50)
    kops.kmv_accumulate(out, x, z, v, "gaussian", bw)
    kops.kmv_accumulate(out, x, z, v, "gaussian", bw)
    torch.testing.assert_close(out, 2 * kops.kmv(x, z, v, "gaussian", bw))
    big = torch.zeros(50, 4)
    kops.kmv_accumulate(big[:, 1], x, z, v, "gaussian", bw)  # non-contiguous out
    torch.testing.assert_close(big[:, 1], kops.kmv(x, z, v, "gaussian", bw))
    assert torch.equal(big[:, [0, 2, 3]], torch.zeros(50, 3))


def test_kernel_objects_and_names_agree(generator):
    x, z, v, bw = random_problem(20, 30, 3, 2, generator=generator)
    by_name = kops.kmv(x, z, v, "gaussian", bw)
    torch.testing.assert_close(kops.kmv(x, z, v, kops.Gaussian(bw)), by_name)
    torch.testing.assert_close(kops.Gaussian(bw).mv(x, z, v), by_name)
    torch.testing.assert_close(kops.kmv(x, z, v, "rbf", bw), by_name)
    torch.testing.assert_close(kops.Laplacian(bw)(x, z), kops.kernel_matrix(x, z, "laplacian", bw))
    # Formulas, checked on one pair against hand-written expressions.
    a, b = torch.tensor([[0.0, 0.0]], dtype=torch.float64), torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    s = 2.0
    assert kops.kernel_matrix(a, b, "gaussian", s).item() == pytest.approx(torch.exp(torch.tensor(-25 / 8)).item())
    assert kops.kernel_matrix(a, b, "laplacian", s).item() == pytest.approx(torch.exp(torch.tensor(-2.5)).item())
    t = 3**0.5 * 5 / s
    assert kops.kernel_matrix(a, b, "matern32", s).item() == pytest.approx((1 + t) * torch.exp(torch.tensor(-t)).item())
    t = 5**0.5 * 5 / s
    assert kops.kernel_matrix(a, b, "matern52", s).item() == pytest.approx(
        (1 + t + t * t / 3) * torch.exp(torch.tensor(-t)).item())

