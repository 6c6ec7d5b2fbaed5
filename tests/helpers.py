"""Helpers shared by the tests: which backends can run a case here (op tests); the smooth
problem and the distance between two fitted models (solver tests)."""
import pytest
import torch

from kops.backends.base import Case
from kops.dispatch import backends

ALL_BACKENDS = ("torch", "cpu", "triton", "cuda")


def skip_unless_runs(backend: str, x: torch.Tensor, z: torch.Tensor, c: int, kernel: str,
                     precision: str = "ieee", op: str = "kmv", max_interpreted_pairs: int = 200_000):
    """Skip the calling test if ``backend`` cannot compute this case on this machine.

    The Triton interpreter is limited to small problems (it runs one program at a time).
    """
    impl = backends().get(backend)
    if impl is None:
        pytest.skip(f"backend {backend!r} is not part of this installation")
    reason = impl.unavailable_reason()
    if reason is not None:
        pytest.skip(f"backend {backend!r} unavailable: {reason}")
    case = Case(op, x.device, x.dtype, x.shape[0], z.shape[0], x.shape[1], c, kernel, precision)
    reason = impl.unsupported_reason(case)
    if reason is not None:
        pytest.skip(f"backend {backend!r} does not support this case: {reason}")
    if backend == "triton" and x.device.type == "cpu" and x.shape[0] * z.shape[0] * max(1, x.shape[1] // 64) > max_interpreted_pairs:
        pytest.skip("too large for the Triton interpreter")


def smooth_problem(n: int, d: int, task: str, seed: int = 0):
    """``(X, y)``: X (n, d) uniform on [0, 3]^d in float64 and a smooth target, two regression
    outputs ``(sin(sum x), cos(2 x_0))`` or 3 classes of ``(x_0 + sin 3 x_1) * 1.2``."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, d, generator=g, dtype=torch.float64) * 3
    if task == "regression":
        return X, torch.stack([torch.sin(X.sum(1)), torch.cos(2 * X[:, 0])], 1)
    return X, ((X[:, 0] + torch.sin(3 * X[:, 1])) * 1.2).long().clamp(0, 2)


def relative_distance(model, reference, X) -> float:
    """``||f(X) - f_ref(X)|| / ||f_ref(X)||`` of two fitted models' decision functions."""
    fitted = torch.as_tensor(model.decision_function(X)).double()
    want = torch.as_tensor(reference.decision_function(X)).double()
    return float((fitted - want).norm() / want.norm())
