"""One kernel table: the C++ list, the Triton branches and the Python classes agree.

kops/kernels.py is the definition; csrc/kernel_codes.h (read by the CPU and CUDA code) and the
profile branches of kops/backends/triton_kernels.py must match it code for code.
"""
import re
from pathlib import Path

import pytest
import torch

import kops
from kops.kernels import KERNELS, KERNELS_BY_CODE

ROOT = Path(__file__).resolve().parents[1]


def _cpp_rows():
    text = (ROOT / "csrc" / "kernel_codes.h").read_text()
    block = text[text.index("#define KOPS_FOR_EACH_KERNEL(X)"):text.index("namespace kops")]
    return [(name, int(code), smooth == "true")
            for name, code, smooth in re.findall(r"X\((\w+),\s*(\d+),\s*(true|false)\)", block)]


def test_cpp_kernel_list_matches_the_python_table():
    rows = _cpp_rows()
    assert [(name.lower(), code, smooth) for name, code, smooth in rows] == [
        (cls.name, cls.code, cls.smooth_at_zero) for cls in KERNELS.values()
    ]


def test_codes_are_dense_and_unique():
    assert sorted(KERNELS_BY_CODE) == list(range(len(KERNELS)))


@pytest.mark.parametrize("function", ["_profile", "_profile_derivative"])
def test_triton_profile_branches_match_the_table(function):
    text = (ROOT / "kops" / "backends" / "triton_kernels.py").read_text()
    start = text.index(f"def {function}(")
    body = text[start:text.index("return k", start)]
    branches = {int(code): name for code, name in re.findall(r"KERNEL == (\d+):\s*# (\w+)", body)}
    assert branches == {cls.code: cls.name for cls in KERNELS.values()}


@pytest.mark.parametrize("name", list(KERNELS))
def test_each_kernel_has_its_profile_in_every_compiled_backend(name):
    # every kernel but the last of a fall-through chain is named in the C++ profiles
    cls = KERNELS[name]
    cpp = cls.__name__
    for path in ("csrc/cpu/kmv_impl.h", "csrc/cuda/kmv_kernels.cuh"):
        text = (ROOT / path).read_text()
        assert f"k{cpp}" in text or name == "matern52", f"{path} has no profile for {name}"


@pytest.mark.parametrize("name", list(KERNELS))
def test_profile_derivative_is_the_derivative_of_the_profile(name):
    kernel = KERNELS[name](1.0)
    u = torch.linspace(0.01, 9.0, 50, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(kernel.profile(u).sum(), u)
    torch.testing.assert_close(kernel.profile_derivative(u.detach()), grad)
    assert kernel.profile(torch.zeros(1, dtype=torch.float64)).item() == 1.0


@pytest.mark.parametrize("name", list(KERNELS))
def test_scale_convention_and_formula(name):
    # k(x, z) = f(|scale (x - z)|^2) with scale = scale_factor / s: check one pair by hand
    cls = KERNELS[name]
    s = 1.7
    x, z = torch.tensor([[0.3, -1.2]], dtype=torch.float64), torch.tensor([[1.1, 0.4]], dtype=torch.float64)
    r = (x - z).norm().item()
    expected = {
        "gaussian": torch.exp(torch.tensor(-r * r / (2 * s * s))),
        "laplacian": torch.exp(torch.tensor(-r / s)),
        "matern32": (1 + 3**0.5 * r / s) * torch.exp(torch.tensor(-(3**0.5) * r / s)),
        "matern52": (1 + 5**0.5 * r / s + 5 * r * r / (3 * s * s)) * torch.exp(torch.tensor(-(5**0.5) * r / s)),
        "cauchy": torch.tensor(1 / (1 + r * r / (s * s))),
    }[name]
    got = kops.kernel_matrix(x, z, cls(s), backend="torch")
    torch.testing.assert_close(got.squeeze(), expected.to(torch.float64))
