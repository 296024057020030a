// pybind11 module instcolor._native: the registration layer for the ops in csrc/ops.
//
// Every op takes its arrays (numpy / buffer protocol on the host; __cuda_array_interface__ or
// DLPack on the device), a preallocated `out` and a CUDA stream handle (ignored on the host),
// dispatches on the device of the main input and runs with the GIL released. The friendly API
// (allocation, array families, streams) is python/instcolor/ops.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "interop.h"
#include "ops/compose.h"
#include "ops/cpu/srgb_u8.h"
#include "ops/cuda_info.h"
#include "ops/fuse_instances.h"
#include "ops/lab_to_rgb.h"
#include "ops/rgb_to_lab.h"
#include "ops/roi_crop_resize.h"

namespace py = pybind11;
using instcolor::Device;
using instcolor::TensorView;
using instcolor::interop::Keep;
using instcolor::interop::to_view;
namespace ops = instcolor::ops;

namespace {

template <class Cpu, class Cuda>
void dispatch(const TensorView& main, const char* op, const char* name, Cpu&& cpu, Cuda&& cuda) {
  if (main.device == Device::kCPU) {
    py::gil_scoped_release nogil;
    cpu();
    return;
  }
#ifdef INSTCOLOR_WITH_CUDA
  py::gil_scoped_release nogil;
  cuda();
#else
  (void)cuda;
  instcolor::throw_value(op, ": ", name, " is a CUDA array but instcolor._native was built without CUDA kernels");
#endif
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "instcolor native kernels (CPU, and CUDA when compiled in)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const instcolor::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

#ifdef INSTCOLOR_WITH_CUDA
  m.attr("cuda_compiled") = true;
#else
  m.attr("cuda_compiled") = false;
#endif
  m.attr("max_instances") = ops::kMaxInstances;

  m.def("cuda_device_count", []() -> int {
#ifdef INSTCOLOR_WITH_CUDA
    return instcolor::cuda::device_count();
#else
    return 0;
#endif
  }, "Number of usable CUDA devices (0 when not compiled, no driver or no GPU; never raises).");
  m.def("cuda_device_count_error", []() -> std::string {
#ifdef INSTCOLOR_WITH_CUDA
    return instcolor::cuda::device_count_error();
#else
    return "instcolor._native was built without CUDA kernels";
#endif
  }, "Why no CUDA device is usable ('' when one is).");

  m.def("rgb_to_lab_u8", [](py::object rgb, int64_t size, py::object out, std::uintptr_t stream) {
    Keep k;
    const TensorView iv = to_view(rgb, "rgb", k, stream), ov = to_view(out, "out", k, stream);
    dispatch(iv, "rgb_to_lab", "rgb", [&] { ops::rgb_to_lab_u8_cpu(iv, size, ov); },
             [&] {
#ifdef INSTCOLOR_WITH_CUDA
               ops::rgb_to_lab_u8_cuda(iv, size, ov, stream);
#endif
             });
  }, py::arg("rgb"), py::arg("size"), py::arg("out"), py::arg("stream") = 0,
     "(N, H, W, 3) uint8 -> out (N, 3, S, S) float32 normalised Lab; size 0 = no resize.");

  m.def("rgb_to_lab_f32", [](py::object rgb, py::object out, std::uintptr_t stream) {
    Keep k;
    const TensorView iv = to_view(rgb, "rgb", k, stream), ov = to_view(out, "out", k, stream);
    dispatch(iv, "rgb_to_lab", "rgb", [&] { ops::rgb_to_lab_f32_cpu(iv, ov); },
             [&] {
#ifdef INSTCOLOR_WITH_CUDA
               ops::rgb_to_lab_f32_cuda(iv, ov, stream);
#endif
             });
  }, py::arg("rgb"), py::arg("out"), py::arg("stream") = 0, "(N, 3, H, W) float32 RGB -> out normalised Lab.");

  m.def("lab_to_rgb", [](py::object lab, py::object out, std::uintptr_t stream) {
    Keep k;
    const TensorView iv = to_view(lab, "lab", k, stream), ov = to_view(out, "out", k, stream);
    dispatch(iv, "lab_to_rgb", "lab", [&] { ops::lab_to_rgb_cpu(iv, ov); },
             [&] {
#ifdef INSTCOLOR_WITH_CUDA
               ops::lab_to_rgb_cuda(iv, ov, stream);
#endif
             });
  }, py::arg("lab"), py::arg("out"), py::arg("stream") = 0, "(N, 3, H, W) normalised Lab -> out sRGB float32.");

  m.def("roi_crop_resize", [](py::object images, py::object boxes, py::object box_image, int64_t size,
                              py::object out, std::uintptr_t stream) {
    Keep k;
    const std::vector<TensorView> iv = instcolor::interop::to_views(images, "image", k, stream);
    const TensorView bv = to_view(boxes, "boxes", k), biv = to_view(box_image, "box_image", k),
                     ov = to_view(out, "out", k, stream);
    dispatch(iv.empty() ? ov : iv[0], "roi_crop_resize", "image", [&] { ops::roi_crop_resize_cpu(iv, bv, biv, size, ov); },
             [&] {
#ifdef INSTCOLOR_WITH_CUDA
               ops::roi_crop_resize_cuda(iv, bv, biv, size, ov, stream);
#endif
             });
  }, py::arg("images"), py::arg("boxes"), py::arg("box_image"), py::arg("size"), py::arg("out"),
     py::arg("stream") = 0,
     "images: list of (H, W, 3) uint8; boxes (M, 4) float64 host; box_image (M,) int64 host -> out (M, 1, S, S).");

  m.def("fuse_instances", [](py::object bg_feat, py::object bg_logit, py::object inst_feat, py::object inst_logit,
                             py::object box_info, py::object inst_image, py::object out, std::uintptr_t stream) {
    Keep k;
    const TensorView f = to_view(bg_feat, "bg_feat", k, stream), l = to_view(bg_logit, "bg_logit", k, stream),
                     fi = to_view(inst_feat, "inst_feat", k, stream), li = to_view(inst_logit, "inst_logit", k, stream),
                     bi = to_view(box_info, "box_info", k), ii = to_view(inst_image, "inst_image", k),
                     ov = to_view(out, "out", k, stream);
    dispatch(f, "fuse_instances", "bg_feat", [&] { ops::fuse_instances_cpu(f, l, fi, li, bi, ii, ov); },
             [&] {
#ifdef INSTCOLOR_WITH_CUDA
               ops::fuse_instances_cuda(f, l, fi, li, bi, ii, ov, stream);
#endif
             });
  }, py::arg("bg_feat"), py::arg("bg_logit"), py::arg("inst_feat"), py::arg("inst_logit"), py::arg("box_info"),
     py::arg("inst_image"), py::arg("out"), py::arg("stream") = 0,
     "One fusion blend; box_info (M, 6) and inst_image (M,) int64 host arrays.");

  m.def("fuse_sample_instances", [](py::object inst_feat, py::object inst_logit, py::object box_info, int64_t H,
                                    int64_t W, py::object samples, py::object logit_samples) {
    Keep k;
    const TensorView fi = to_view(inst_feat, "inst_feat", k), li = to_view(inst_logit, "inst_logit", k),
                     bi = to_view(box_info, "box_info", k), sv = to_view(samples, "samples", k),
                     lv = to_view(logit_samples, "logit_samples", k);
    py::gil_scoped_release nogil;
    ops::fuse_sample_instances_cpu(fi, li, bi, H, W, sv, lv);
  }, py::arg("inst_feat"), py::arg("inst_logit"), py::arg("box_info"), py::arg("H"), py::arg("W"), py::arg("samples"),
     py::arg("logit_samples"), "Instance features and logits resampled to their boxes (host float32), for "
     "fuse_instances_presampled.");

  m.def("fuse_instances_presampled", [](py::object bg_feat, py::object bg_logit, py::object samples,
                                        py::object logit_samples, py::object box_info, py::object inst_image,
                                        py::object out) {
    Keep k;
    const TensorView f = to_view(bg_feat, "bg_feat", k), l = to_view(bg_logit, "bg_logit", k),
                     sv = to_view(samples, "samples", k), lv = to_view(logit_samples, "logit_samples", k),
                     bi = to_view(box_info, "box_info", k), ii = to_view(inst_image, "inst_image", k),
                     ov = to_view(out, "out", k);
    py::gil_scoped_release nogil;
    ops::fuse_instances_presampled_cpu(f, l, sv, lv, bi, ii, ov);
  }, py::arg("bg_feat"), py::arg("bg_logit"), py::arg("samples"), py::arg("logit_samples"), py::arg("box_info"),
     py::arg("inst_image"), py::arg("out"), "fuse_instances with presampled instance planes (host float32).");

  m.def("set_cpu_threads", [](int n) {
    if (n < 1) throw py::value_error("set_cpu_threads: n must be >= 1, got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
  }, "Threads of the CPU kernels' parallel loops started from the calling thread (OpenMP's per-thread "
     "setting; other threads keep theirs). No-op in a build without OpenMP.");
  m.def("cpu_threads", []() -> int {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
  }, "Threads the CPU kernels' parallel loops would use when started from the calling thread.");
  m.def("_srgb_u8_mismatches", [](uint32_t lo, uint32_t hi) {
    if (lo > hi || hi > 0x3f800000u) throw py::value_error("_srgb_u8_mismatches: need lo <= hi <= bits of 1.0f");
    py::gil_scoped_release release;
    return instcolor::color::srgb_u8_mismatches(lo, hi);
  }, "Check of the CPU compose's pow-free sRGB quantisation: floats with bit patterns in [lo, hi] "
     "(within [0, 1]) where it differs from to_u8(linear_to_srgb(v)).");
  m.def("compose", [](py::object image, py::object ab, py::object out, std::uintptr_t stream) {
    Keep k;
    const TensorView iv = to_view(image, "image", k, stream), av = to_view(ab, "ab", k, stream),
                     ov = to_view(out, "out", k, stream);
    dispatch(iv, "compose", "image", [&] { ops::compose_cpu(iv, av, ov); },
             [&] {
#ifdef INSTCOLOR_WITH_CUDA
               ops::compose_cuda(iv, av, ov, stream);
#endif
             });
  }, py::arg("image"), py::arg("ab"), py::arg("out"), py::arg("stream") = 0,
     "image (H, W, 3) uint8 + ab (2, h, w) float32 -> out (H, W, 3) uint8.");

  m.def("compose_processed", [](py::object full_L, py::object ab, py::object out, std::uintptr_t stream) {
    Keep k;
    const TensorView lv = to_view(full_L, "full_L", k, stream), av = to_view(ab, "ab", k, stream),
                     ov = to_view(out, "out", k, stream);
    dispatch(lv, "compose_processed", "full_L", [&] { ops::compose_processed_cpu(lv, av, ov); },
             [&] {
#ifdef INSTCOLOR_WITH_CUDA
               ops::compose_processed_cuda(lv, av, ov, stream);
#endif
             });
  }, py::arg("full_L"), py::arg("ab"), py::arg("out"), py::arg("stream") = 0,
     "full_L (1, S, S) + ab (2, S, S) float32 -> out (S, S, 3) uint8.");
}
