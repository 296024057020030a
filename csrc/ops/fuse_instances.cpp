// Shared (device independent) validation and planning of fuse_instances.
#include "ops/fuse_instances.h"

namespace instcolor {
namespace ops {

FusePlan check_fuse_instances(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
                              const TensorView& inst_logit, const TensorView& box_info, const TensorView& inst_image,
                              const TensorView& out, Device dev) {
  const char* op = "fuse_instances";
  const bool half_ok = dev == Device::kCUDA;
  check_float_dtype(bg_feat, half_ok, op, "bg_feat");
  for (auto [t, name] : {std::pair<const TensorView*, const char*>{&bg_logit, "bg_logit"},
                         {&inst_feat, "inst_feat"}, {&inst_logit, "inst_logit"}, {&out, "out"}}) {
    if (t->dtype != bg_feat.dtype)
      throw_type(op, ": ", name, " is ", dtype_name(t->dtype), " but bg_feat is ", dtype_name(bg_feat.dtype),
                 " (all features and logits must share one dtype)");
  }
  check_dim(bg_feat, 4, op, "bg_feat", "(B, C, H, W)");
  FusePlan p;
  p.B = bg_feat.size(0);
  p.C = bg_feat.size(1);
  p.H = bg_feat.size(2);
  p.W = bg_feat.size(3);
  check_shape(bg_logit, {p.B, 1, p.H, p.W}, op, "bg_logit");
  check_dim(inst_feat, 4, op, "inst_feat", "(M, C, h, w)");
  p.M = inst_feat.size(0);
  p.h = inst_feat.size(2);
  p.w = inst_feat.size(3);
  check_shape(inst_feat, {p.M, p.C, p.h, p.w}, op, "inst_feat");
  check_shape(inst_logit, {p.M, 1, p.h, p.w}, op, "inst_logit");
  check_dtype(box_info, DType::kI64, op, "box_info");
  check_shape(box_info, {p.M, 6}, op, "box_info");
  check_dtype(inst_image, DType::kI64, op, "inst_image");
  check_shape(inst_image, {p.M}, op, "inst_image");
  check_shape(out, bg_feat.shape, op, "out");
  for (auto [t, name] : {std::pair<const TensorView*, const char*>{&bg_feat, "bg_feat"}, {&bg_logit, "bg_logit"},
                         {&inst_feat, "inst_feat"}, {&inst_logit, "inst_logit"}, {&box_info, "box_info"},
                         {&inst_image, "inst_image"}}) {
    check_tensor(*t, op, name);
  }
  check_output(out, op, "out");
  if (bg_feat.device != dev)
    throw_value(op, ": bg_feat is on ", device_name(bg_feat.device), ", expected ", device_name(dev));
  for (auto [t, name] : {std::pair<const TensorView*, const char*>{&bg_logit, "bg_logit"},
                         {&inst_feat, "inst_feat"}, {&inst_logit, "inst_logit"}, {&out, "out"}}) {
    check_same_device(bg_feat, "bg_feat", *t, op, name);
  }
  if (box_info.device != Device::kCPU) throw_value(op, ": box_info must be a host (CPU) array");
  if (inst_image.device != Device::kCPU) throw_value(op, ": inst_image must be a host (CPU) array");
  if (p.H > kMaxElements32 || p.W > kMaxElements32 || p.h > kMaxElements32 || p.w > kMaxElements32)
    throw_value(op, ": spatial sizes must be < 2^31");
  if (p.M > kMaxElements32) throw_value(op, ": too many instances (", p.M, ")");
  if (p.M > 0 && (p.h < 1 || p.w < 1)) throw_value(op, ": inst_feat has an empty spatial size ", shape_str(inst_feat.shape));
  if (dev == Device::kCUDA) {
    for (auto [t, name] : {std::pair<const TensorView*, const char*>{&bg_feat, "bg_feat"},
                           {&inst_feat, "inst_feat"}}) {
      check_int32_indexable(*t, op, name);
    }
  }

  plan_fuse_boxes(p, box_info.ptr<int64_t>(), inst_image.ptr<int64_t>(), op);
  return p;
}

void plan_fuse_boxes(FusePlan& p, const int64_t* info, const int64_t* img, const char* op) {
  std::vector<int32_t> count(static_cast<size_t>(p.B) + 1, 0);
  p.box.resize(static_cast<size_t>(p.M) * 4);
  p.scale.resize(static_cast<size_t>(p.M) * 2);
  for (int64_t i = 0; i < p.M; ++i) {
    const int64_t* r = info + 6 * i;
    const int64_t left = r[0], right = r[1], top = r[2], bottom = r[3], width = r[4], height = r[5];
    // Each term is bounded before the sums are formed: arbitrary int64 rows must not overflow them.
    const bool terms_ok = width >= 1 && height >= 1 && left >= 0 && right >= 0 && top >= 0 && bottom >= 0 &&
                          left <= p.W && width <= p.W && right <= p.W && top <= p.H && height <= p.H && bottom <= p.H;
    if (!terms_ok || left + width + right != p.W || top + height + bottom != p.H)
      throw_value(op, ": box_info[", i, "] = [", left, ", ", right, ", ", top, ", ", bottom, ", ", width, ", ", height,
                  "] does not describe a non-empty box inside the ", p.W, "x", p.H,
                  " map (need pads >= 0, width/height >= 1, left + width + right == W, top + height + bottom == H)");
    const int64_t b = img[i];
    if (b < 0 || b >= p.B)
      throw_value(op, ": inst_image[", i, "] = ", b, " is not a valid image index (B = ", p.B, ")");
    if (++count[b] > kMaxInstances)
      throw_value(op, ": image ", b, " has more than ", kMaxInstances, " instances (inst_image)");
    p.box[4 * i + 0] = static_cast<int32_t>(left);
    p.box[4 * i + 1] = static_cast<int32_t>(top);
    p.box[4 * i + 2] = static_cast<int32_t>(width);
    p.box[4 * i + 3] = static_cast<int32_t>(height);
    p.scale[2 * i + 0] = static_cast<float>(p.w) / static_cast<float>(width);
    p.scale[2 * i + 1] = static_cast<float>(p.h) / static_cast<float>(height);
  }
  p.img_start.assign(static_cast<size_t>(p.B) + 1, 0);
  for (int64_t b = 0; b < p.B; ++b) p.img_start[b + 1] = p.img_start[b] + count[b];
  p.order.resize(static_cast<size_t>(p.M));
  std::vector<int32_t> fill(p.img_start.begin(), p.img_start.end() - (p.B > 0 ? 1 : 0));
  for (int64_t i = 0; i < p.M; ++i) p.order[fill[img[i]]++] = static_cast<int32_t>(i);
}

}  // namespace ops
}  // namespace instcolor
