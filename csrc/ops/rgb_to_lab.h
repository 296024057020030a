// Op rgb_to_lab: RGB -> normalised Lab planes, float32 (ch0 = (L - 50) / 100, ch1-2 = ab / 110).
//
//   u8 form:  image (N, H, W, 3) uint8, C-contiguous.
//             size > 0: first resample to size x size exactly like Pillow BILINEAR
//             (ops/pillow_resample.h; bit-exact at the uint8 level), then convert x / 255.
//             size == 0: convert at the original resolution.
//             out (N, 3, S, S) float32 (S = size) or (N, 3, H, W).
//   f32 form: rgb (N, 3, H, W) float32 in [0, 1] -> out (N, 3, H, W) float32.
//
// Conversion: the official rgb2lab in float32 (ops/color_math.h).
#pragma once

#include <cstdint>

#include "ops/common.h"

namespace instcolor {
namespace ops {

inline void check_rgb_to_lab_u8(const TensorView& image, int64_t size, const TensorView& out, Device dev) {
  const char* op = "rgb_to_lab";
  check_dtype(image, DType::kU8, op, "rgb");
  check_shape(image, {-1, -1, -1, 3}, op, "rgb");
  check_tensor(image, op, "rgb");
  if (image.size(1) < 1 || image.size(2) < 1) throw_value(op, ": rgb is empty, shape ", shape_str(image.shape));
  if (size < 0 || size > (int64_t(1) << 16)) throw_value(op, ": size must be in 1..65536 (or 0/None for no resize), got ", size);
  const int64_t oh = size ? size : image.size(1), ow = size ? size : image.size(2);
  check_dtype(out, DType::kF32, op, "out");
  check_shape(out, {image.size(0), 3, oh, ow}, op, "out");
  check_output(out, op, "out");
  if (image.device != dev) throw_value(op, ": rgb is on ", device_name(image.device), ", expected ", device_name(dev));
  check_same_device(image, "rgb", out, op, "out");
}

inline void check_rgb_to_lab_f32(const TensorView& rgb, const TensorView& out, Device dev) {
  const char* op = "rgb_to_lab";
  check_dtype(rgb, DType::kF32, op, "rgb");
  check_shape(rgb, {-1, 3, -1, -1}, op, "rgb");
  check_tensor(rgb, op, "rgb");
  check_dtype(out, DType::kF32, op, "out");
  check_shape(out, rgb.shape, op, "out");
  check_output(out, op, "out");
  if (rgb.device != dev) throw_value(op, ": rgb is on ", device_name(rgb.device), ", expected ", device_name(dev));
  check_same_device(rgb, "rgb", out, op, "out");
}

void rgb_to_lab_u8_cpu(const TensorView& image, int64_t size, const TensorView& out);
void rgb_to_lab_f32_cpu(const TensorView& rgb, const TensorView& out);
#ifdef INSTCOLOR_WITH_CUDA
void rgb_to_lab_u8_cuda(const TensorView& image, int64_t size, const TensorView& out, std::uintptr_t stream);
void rgb_to_lab_f32_cuda(const TensorView& rgb, const TensorView& out, std::uintptr_t stream);
#endif

}  // namespace ops
}  // namespace instcolor
