// Op lab_to_rgb: normalised Lab (N, 3, H, W) float32 -> sRGB (N, 3, H, W) float32.
//
// The official lab2rgb: only fz is clamped at 0 (fx, fy may be negative), linear RGB clamped
// at 0 before the gamma, no upper clamp (values > 1 occur).
#pragma once

#include <cstdint>

#include "ops/common.h"

namespace instcolor {
namespace ops {

inline void check_lab_to_rgb(const TensorView& lab, const TensorView& out, Device dev) {
  const char* op = "lab_to_rgb";
  check_dtype(lab, DType::kF32, op, "lab");
  check_shape(lab, {-1, 3, -1, -1}, op, "lab");
  check_tensor(lab, op, "lab");
  check_dtype(out, DType::kF32, op, "out");
  check_shape(out, lab.shape, op, "out");
  check_output(out, op, "out");
  if (lab.device != dev) throw_value(op, ": lab is on ", device_name(lab.device), ", expected ", device_name(dev));
  check_same_device(lab, "lab", out, op, "out");
}

void lab_to_rgb_cpu(const TensorView& lab, const TensorView& out);
#ifdef INSTCOLOR_WITH_CUDA
void lab_to_rgb_cuda(const TensorView& lab, const TensorView& out, std::uintptr_t stream);
#endif

}  // namespace ops
}  // namespace instcolor
