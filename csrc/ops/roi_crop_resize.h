// Op roi_crop_resize: boxes of one or more RGB uint8 images -> normalised L of each crop.
//
//   images:    K views, each (H_k, W_k, 3) uint8, C-contiguous, all on one device.
//   boxes:     (M, 4) float64 host array, xyxy in input pixels. Coordinates are truncated toward
//              zero (the official int32 cast); the crop is [x0, x1) x [y0, y1) of the ORIGINAL image.
//   box_image: (M,) int64 host array, index of each box's image in [0, K).
//   size:      S >= 1.
//   out:       (M, 1, S, S) float32 on the images' device: (L - 50) / 100 of the crop resampled to
//              S x S exactly like Pillow BILINEAR (bit-exact uint8), converted like rgb_to_lab.
// Validation (before any kernel): finite coordinates, non-empty after truncation, inside the image.
// M == 0: nothing runs.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/common.h"

namespace instcolor {
namespace ops {

struct CropBox {
  int64_t x0, y0, x1, y1;  // truncated, validated
  int64_t image;
};

// Validates everything; returns the truncated boxes.
std::vector<CropBox> check_roi_crop_resize(const std::vector<TensorView>& images, const TensorView& boxes,
                                           const TensorView& box_image, int64_t size, const TensorView& out,
                                           Device dev);

void roi_crop_resize_cpu(const std::vector<TensorView>& images, const TensorView& boxes, const TensorView& box_image,
                         int64_t size, const TensorView& out);
#ifdef INSTCOLOR_WITH_CUDA
void roi_crop_resize_cuda(const std::vector<TensorView>& images, const TensorView& boxes,
                          const TensorView& box_image, int64_t size, const TensorView& out, std::uintptr_t stream);
#endif

}  // namespace ops
}  // namespace instcolor
