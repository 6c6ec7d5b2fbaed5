"""The ops as torch custom ops: schemas, opcheck, fake tensors and torch.compile."""
import re

import pytest
import torch

import kops
from kops import _native

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _normalise(schema: str) -> str:
    return re.sub(r"\s+", " ", schema).strip()


def test_public_schemas_are_defined_once_in_python():
    # no TORCH_LIBRARY(kops) in C++ (only the private ops' fragments), and the schemas of
    # kops.ops.SCHEMAS are the registered ones
    for path in (ROOT / "csrc").rglob("*"):
        if path.suffix in (".cpp", ".cu", ".h", ".cuh"):
            assert "TORCH_LIBRARY(kops" not in path.read_text(), path
    for name, schema in kops.ops.SCHEMAS.items():
        assert _normalise(str(getattr(torch.ops.kops, name).default._schema)) == _normalise(f"kops::{name}{schema}")


def test_raw_op_with_a_float_bandwidth_still_works():
    x, z, v = _args(c=2)
    out = torch.ops.kops.kmv(x, z, v, "gaussian", 8.0, "ieee", "auto")
    torch.testing.assert_close(out, kops.kmv(x, z, v, "gaussian", 8.0))


def test_extension_is_loaded():
    assert _native.extension_loaded(), _native.EXTENSION_ERROR
    info = kops.info()["extension"]
    assert info["version"] == kops.__version__


def _args(dtype=torch.float64, c=3, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=dtype, requires_grad=requires_grad)
    z = torch.randn(9, 5, generator=g, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(9, c, generator=g, dtype=dtype, requires_grad=requires_grad)
    return x, z, v


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_kmv(kernel, requires_grad):
    x, z, v = _args(requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.kops.kmv.default, (x, z, v, kernel, 1.5, "ieee", "auto"))


def test_opcheck_kmv_vector_and_float32():
    x, z, v = _args(dtype=torch.float32)
    torch.library.opcheck(torch.ops.kops.kmv.default, (x, z, v[:, 0], "laplacian", 2.0, "ieee", "torch"))


def test_opcheck_kmv_accumulate():
    x, z, v = _args()
    out = torch.zeros(7, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.kops.kmv_accumulate.default, (out, x, z, v, "gaussian", 1.0, 0.5, "ieee", "auto"))


def test_opcheck_kmv_grad_xz():
    x, z, v = _args()
    g = torch.randn(7, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.kops.kmv_grad_xz.default, (x, z, v, g, "gaussian", 1.0, "ieee", "auto"))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_kernel_matrix(requires_grad):
    x, z, _ = _args(requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.kops.kernel_matrix.default, (x, z, "matern52", 1.0, "ieee", "auto"))


def test_fake_tensors_give_shapes_without_computing():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, z, v = torch.empty(1000, 64), torch.empty(2000, 64), torch.empty(2000, 10)
        assert kops.kmv(x, z, v, "gaussian", 1.0).shape == (1000, 10)
        assert kops.kmv(x, z, v[:, 0], "gaussian", 1.0).shape == (1000,)
        assert kops.kernel_matrix(x, z, "laplacian", 1.0).shape == (1000, 2000)
        with pytest.raises(ValueError, match="v must have as many rows as z"):
            kops.kmv(x, z, v[:5], "gaussian", 1.0)


def test_meta_device():
    x, z, v = torch.empty(10, 3, device="meta"), torch.empty(4, 3, device="meta"), torch.empty(4, 2, device="meta")
    assert kops.kmv(x, z, v, "gaussian", 1.0).shape == (10, 2)


def test_torch_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()

    def model(x, z, alpha, log_bw_unused):
        pred = kops.kmv(x, z, alpha, kops.Laplacian(2.0))
        return (pred - 1.0).square().mean() + kops.kernel_matrix(x[:4], z[:4], "gaussian", 1.5).sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x, z, alpha = _args(dtype=torch.float32, c=2, requires_grad=True)
    loss = compiled(x, z, alpha, None)
    loss.backward()
    grads = [t.grad.clone() for t in (x, z, alpha)]
    for t in (x, z, alpha):
        t.grad = None
    eager = model(x, z, alpha, None)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    for got, t in zip(grads, (x, z, alpha)):
        torch.testing.assert_close(got, t.grad)


def test_torch_compile_with_inductor():
    torch._dynamo.reset()

    @torch.compile(fullgraph=True)
    def predict(x, z, alpha):
        return torch.tanh(kops.kmv(x, z, alpha, "gaussian", 1.0)) * 2

    x, z, alpha = _args(dtype=torch.float32)
    torch.testing.assert_close(predict(x, z, alpha), torch.tanh(kops.kmv(x, z, alpha, "gaussian", 1.0)) * 2)
