"""Kernel-product backends; each module declares one backend, registered here.

Imports flow one way: registry (base class, case, capabilities, selection) <- the backend
modules <- this package <- kops.dispatch <- kops.ops.
"""
from .registry import register_backend
from .cpu_native import CpuNativeBackend
from .cuda_native import CudaBackend
from .torch_reference import TorchBackend
from .triton_backend import TritonBackend

for _backend in (TorchBackend(), CpuNativeBackend(), CudaBackend(), TritonBackend()):
    register_backend(_backend)
