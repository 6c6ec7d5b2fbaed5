"""Helpers shared by the op tests: which backends can run a case here."""
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
