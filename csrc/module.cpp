// pybind11 module kops._C: build information. Importing it also loads the native kernels
// compiled into the same library (private ops in their own TORCH_LIBRARY_FRAGMENTs); the
// public op schemas are defined once, in kops/ops.py.
#include <pybind11/pybind11.h>
#include <string>
#include <thread>

#ifdef KOPS_WITH_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
  info["version"] = std::string(KOPS_VERSION);
  info["compiled_backends"] = std::string(KOPS_COMPILED_BACKENDS);  // comma-separated
#ifdef KOPS_WITH_CUDA
  info["cuda"] = true;
  info["cuda_reason"] = std::string("");
#else
  info["cuda"] = false;
  info["cuda_reason"] = std::string(KOPS_CUDA_REASON);
#endif
  info["cuda_architectures"] = std::string(KOPS_CUDA_ARCHS);
#ifdef KOPS_WITH_OPENMP
  info["openmp"] = true;
  info["openmp_threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_threads"] = 1;
#endif
  info["hardware_threads"] = static_cast<int>(std::thread::hardware_concurrency());
  info["compiler"] = std::string(__VERSION__);
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "kops native extension: native kernels and build information";
  m.def("build_info", &build_info, "Build configuration of the kops native extension.");
}
