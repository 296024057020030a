// pybind11 module instcolor._native: the registration layer for the ops in csrc/ops.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
  m.doc() = "instcolor native kernels (CPU, and CUDA when compiled in)";
#ifdef INSTCOLOR_WITH_CUDA
  m.attr("cuda_compiled") = true;
#else
  m.attr("cuda_compiled") = false;
#endif
}
