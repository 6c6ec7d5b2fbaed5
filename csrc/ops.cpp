// Schemas of the kops operators. The implementations are registered per dispatch key:
// the dispatching Python layer (kops/ops.py) for CPU and CUDA, and private native kernels
// (csrc/cpu, csrc/cuda) under their own names, which the Python dispatch calls.
//
// The same schema strings are listed in kops/_schemas.py, which defines them when this
// extension is not importable; a test checks that both lists agree.
#include <torch/library.h>

TORCH_LIBRARY(kops, m) {
  // out = K(x, z) @ v
  m.def("kmv(Tensor x, Tensor z, Tensor v, str kernel, float bandwidth, "
        "str precision, str backend) -> Tensor");
  // out += alpha * K(x, z) @ v   (in place; used by the solvers)
  m.def("kmv_accumulate(Tensor(a!) out, Tensor x, Tensor z, Tensor v, str kernel, "
        "float bandwidth, float alpha, str precision, str backend) -> ()");
  // Gradients of <grad_out, K(x, z) @ v> with respect to x and z.
  m.def("kmv_grad_xz(Tensor x, Tensor z, Tensor v, Tensor grad_out, str kernel, "
        "float bandwidth, str precision, str backend) -> (Tensor, Tensor)");
  // K(x, z), for small blocks.
  m.def("kernel_matrix(Tensor x, Tensor z, str kernel, float bandwidth, str precision, "
        "str backend) -> Tensor");
}
