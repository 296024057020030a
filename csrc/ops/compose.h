// Ops compose / compose_processed: predicted ab + lightness -> RGB uint8.
//
//   compose:           image (H, W, 3) uint8, ab (2, h, w) float32 normalised (ab / 110)
//                      -> out (H, W, 3) uint8. ab is resized to H x W with bilinear interpolation
//                      (align_corners=False, PyTorch index rule), joined with the image's own
//                      normalised L (rgb_to_lab of the pixel), converted with lab_to_rgb, clamped to
//                      [0, 1] and rounded (x * 255, half to even).
//   compose_processed: L (1, S, S) float32 normalised, ab (2, S, S) -> out (S, S, 3) uint8 (the picture
//                      the official test saves: lab2rgb(L, ab), clamp, round).
#pragma once

#include <cstdint>

#include "ops/common.h"

namespace instcolor {
namespace ops {

inline void check_compose(const TensorView& image, const TensorView& ab, const TensorView& out, Device dev) {
  const char* op = "compose";
  check_dtype(image, DType::kU8, op, "image");
  check_shape(image, {-1, -1, 3}, op, "image");
  check_tensor(image, op, "image");
  check_dtype(ab, DType::kF32, op, "ab");
  check_shape(ab, {2, -1, -1}, op, "ab");
  check_tensor(ab, op, "ab");
  if (ab.size(1) < 1 || ab.size(2) < 1) throw_value(op, ": ab is empty, shape ", shape_str(ab.shape));
  check_dtype(out, DType::kU8, op, "out");
  check_shape(out, image.shape, op, "out");
  check_output(out, op, "out");
  if (image.device != dev) throw_value(op, ": image is on ", device_name(image.device), ", expected ", device_name(dev));
  check_same_device(image, "image", ab, op, "ab");
  check_same_device(image, "image", out, op, "out");
  if (image.size(0) > kMaxElements32 || image.size(1) > kMaxElements32) throw_value(op, ": image too large");
  if (dev == Device::kCUDA) check_int32_indexable(image, op, "image");
}

inline void check_compose_processed(const TensorView& L, const TensorView& ab, const TensorView& out, Device dev) {
  const char* op = "compose_processed";
  check_dtype(L, DType::kF32, op, "full_L");
  check_shape(L, {1, -1, -1}, op, "full_L");
  check_tensor(L, op, "full_L");
  check_dtype(ab, DType::kF32, op, "ab");
  check_shape(ab, {2, L.size(1), L.size(2)}, op, "ab");
  check_tensor(ab, op, "ab");
  check_dtype(out, DType::kU8, op, "out");
  check_shape(out, {L.size(1), L.size(2), 3}, op, "out");
  check_output(out, op, "out");
  if (L.device != dev) throw_value(op, ": full_L is on ", device_name(L.device), ", expected ", device_name(dev));
  check_same_device(L, "full_L", ab, op, "ab");
  check_same_device(L, "full_L", out, op, "out");
  if (dev == Device::kCUDA) check_int32_indexable(out, op, "out");
}

void compose_cpu(const TensorView& image, const TensorView& ab, const TensorView& out);
void compose_processed_cpu(const TensorView& L, const TensorView& ab, const TensorView& out);
#ifdef INSTCOLOR_WITH_CUDA
void compose_cuda(const TensorView& image, const TensorView& ab, const TensorView& out, std::uintptr_t stream);
void compose_processed_cuda(const TensorView& L, const TensorView& ab, const TensorView& out, std::uintptr_t stream);
#endif

}  // namespace ops
}  // namespace instcolor
