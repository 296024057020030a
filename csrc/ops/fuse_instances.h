// Op fuse_instances: one instance-fusion blend (the official WeightGenerator), batched over images.
//
//   bg_feat    (B, C, H, W)  full-image feature F
//   bg_logit   (B, 1, H, W)  background logit
//   inst_feat  (M, C, h, w)  instance features at crop resolution
//   inst_logit (M, 1, h, w)  instance logits at crop resolution
//   box_info   (M, 6) int64 host array [left pad, right pad, top pad, bottom pad, width, height]
//              with left + width + right == W, top + height + bottom == H, pads >= 0, width/height >= 1
//   inst_image (M,) int64 host array: image of each instance in [0, B); at most kMaxInstances per image
//   out        (B, C, H, W)
// Feature/logit/out dtype: float32 (CPU, CUDA) or float16 (CUDA; math in float32). All contiguous.
//
// Per output pixel (computed on the fly, the padded (M, C, H, W) tensors are never built):
// each instance covering the pixel contributes its bilinearly resized (align_corners=False,
// PyTorch source-index rule, scale = float(in) / float(out)) logit and feature; instances of the same
// image that do not cover it take part in the softmax with logit 0 and feature 0; the background
// logit gets +1e5 outside the union of the image's boxes; out = sum_i w_i f_i + w_bg F (instances in
// index order, background last). An image without instances gets out = F.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/common.h"

namespace instcolor {
namespace ops {

constexpr int kMaxInstances = 8;  // per image (the official box_num)
constexpr float kBackgroundOutsideBoxes = 100000.0f;

struct FusePlan {
  int64_t B = 0, C = 0, H = 0, W = 0, M = 0, h = 0, w = 0;
  std::vector<int32_t> img_start;  // B + 1: instances of image b are order[img_start[b] .. img_start[b+1])
  std::vector<int32_t> order;      // M: instance indices grouped by image, ascending within an image
  std::vector<int32_t> box;        // 4 * M by instance index: left, top, width, height
  std::vector<float> scale;        // 2 * M by instance index: float(w) / width, float(h) / height
};

// The boxes and image grouping of a blend: fills box / scale / img_start / order of a plan whose
// B, C, H, W, M, h, w are set; ValueError naming the first bad box_info row or inst_image entry.
void plan_fuse_boxes(FusePlan& p, const int64_t* box_info, const int64_t* inst_image, const char* op);

FusePlan check_fuse_instances(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
                              const TensorView& inst_logit, const TensorView& box_info, const TensorView& inst_image,
                              const TensorView& out, Device dev);

// Op fuse_instances_presampled (CPU only): the same blend, with every instance's feature and logit
// already resampled to its box (fuse_sample_instances below), so an edit session that blends the
// same instances again and again reads box-sized planes instead of resampling the crops each time.
//   samples        (sum_i C * height_i * width_i,) float32: instance i's (C, height_i, width_i) block,
//                  instances in index order
//   logit_samples  (sum_i height_i * width_i,) float32: instance i's (height_i, width_i) block
// Other arguments and the result: as fuse_instances; the output is bit-identical to it.
void fuse_instances_presampled_cpu(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& samples,
                                   const TensorView& logit_samples, const TensorView& box_info,
                                   const TensorView& inst_image, const TensorView& out);

// Op fuse_sample_instances (CPU only): inst_feat (M, C, h, w) and inst_logit (M, 1, h, w) float32
// resampled to the boxes of box_info (M, 6) on an H x W map, exactly as fuse_instances samples them,
// into samples / logit_samples laid out as above.
void fuse_sample_instances_cpu(const TensorView& inst_feat, const TensorView& inst_logit, const TensorView& box_info,
                               int64_t H, int64_t W, const TensorView& samples, const TensorView& logit_samples);

void fuse_instances_cpu(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
                        const TensorView& inst_logit, const TensorView& box_info, const TensorView& inst_image,
                        const TensorView& out);
#ifdef INSTCOLOR_WITH_CUDA
void fuse_instances_cuda(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
                         const TensorView& inst_logit, const TensorView& box_info, const TensorView& inst_image,
                         const TensorView& out, std::uintptr_t stream);
#endif

}  // namespace ops
}  // namespace instcolor
