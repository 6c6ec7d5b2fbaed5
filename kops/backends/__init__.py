"""Kernel-product backends; each module registers one backend with kops.dispatch."""
from ..dispatch import register_backend
from .torch_reference import TorchBackend

register_backend(TorchBackend())
from . import cpu_native  # noqa: E402,F401  (registers the native CPU backend "cpu")
from . import cuda_native  # noqa: E402,F401  (registers the native CUDA backend "cuda")
from . import triton_backend  # noqa: E402,F401  (registers the Triton backend "triton")
