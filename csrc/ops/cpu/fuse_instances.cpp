// CPU fuse_instances, fuse_instances_presampled and fuse_sample_instances (contract: ops/fuse_instances.h).
//
// Parallel over output rows (b, y). Per row: the softmax weights of every pixel are computed once,
// then each channel is blended. The instance values come from a source: sampled on the fly from the
// crops (fuse_instances; nothing of size M x C x H x W is materialised) or read from planes already
// resampled to the boxes (fuse_instances_presampled). Both sources give the same floats, and the
// blend arithmetic is shared, so the two ops agree bit for bit.
#include "ops/fuse_instances.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "ops/color_math.h"

namespace instcolor {
namespace ops {
namespace {

struct XTable {  // horizontal taps of one instance, per column of its box
  std::vector<int32_t> x0, x1;
  std::vector<float> l0, l1;
};

// Bilinear sample of one (h, w) plane for the box columns [0, width): out[dx].
inline void sample_row(const float* __restrict plane, int64_t w, const color::LinearTap& ty, const XTable& xt,
                       int64_t width, float* __restrict out) {
  const float* r0 = plane + static_cast<int64_t>(ty.i0) * w;
  const float* r1 = plane + static_cast<int64_t>(ty.i1) * w;
  const int32_t* x0 = xt.x0.data();
  const int32_t* x1 = xt.x1.data();
  const float* l0 = xt.l0.data();
  const float* l1 = xt.l1.data();
  const float h0 = ty.l0, h1 = ty.l1;
  for (int64_t d = 0; d < width; ++d)
    out[d] = h0 * (l0[d] * r0[x0[d]] + l1[d] * r0[x1[d]]) + h1 * (l0[d] * r1[x0[d]] + l1[d] * r1[x1[d]]);
}

std::vector<XTable> x_tables(const FusePlan& p) {
  std::vector<XTable> xt(static_cast<size_t>(p.M));
  for (int64_t i = 0; i < p.M; ++i) {
    const int64_t width = p.box[4 * i + 2];
    XTable& t = xt[i];
    t.x0.resize(width), t.x1.resize(width), t.l0.resize(width), t.l1.resize(width);
    for (int64_t d = 0; d < width; ++d) {
      const color::LinearTap tap =
          color::linear_tap(static_cast<int>(d), static_cast<int>(p.w), static_cast<int>(width), p.scale[2 * i]);
      t.x0[d] = tap.i0, t.x1[d] = tap.i1, t.l0[d] = tap.l0, t.l1[d] = tap.l1;
    }
  }
  return xt;
}

inline color::LinearTap y_tap(const FusePlan& p, int32_t i, int64_t y) {
  return color::linear_tap(static_cast<int>(y - p.box[4 * i + 1]), static_cast<int>(p.h),
                           static_cast<int>(p.box[4 * i + 3]), p.scale[2 * i + 1]);
}

// Instance values sampled from the crops as they are needed.
struct CropSource {
  const FusePlan& p;
  const float* IF;
  const float* IL;
  std::vector<XTable> xt;
  CropSource(const FusePlan& plan, const float* feat, const float* logit) : p(plan), IF(feat), IL(logit), xt(x_tables(plan)) {}
  // Row y of instance i's logit (box columns), written to scratch.
  const float* logit_row(int32_t i, int64_t y, float* scratch) const {
    sample_row(IL + static_cast<int64_t>(i) * p.h * p.w, p.w, y_tap(p, i, y), xt[i], p.box[4 * i + 2], scratch);
    return scratch;
  }
  const float* feat_row(int32_t i, int64_t c, int64_t y, float* scratch) const {
    sample_row(IF + (static_cast<int64_t>(i) * p.C + c) * p.h * p.w, p.w, y_tap(p, i, y), xt[i], p.box[4 * i + 2],
               scratch);
    return scratch;
  }
};

// Offsets of each instance's block in the presampled buffers (index order).
void sample_offsets(const FusePlan& p, std::vector<int64_t>& feat_off, std::vector<int64_t>& logit_off) {
  feat_off.assign(static_cast<size_t>(p.M) + 1, 0);
  logit_off.assign(static_cast<size_t>(p.M) + 1, 0);
  for (int64_t i = 0; i < p.M; ++i) {
    const int64_t area = static_cast<int64_t>(p.box[4 * i + 2]) * p.box[4 * i + 3];
    logit_off[i + 1] = logit_off[i] + area;
    feat_off[i + 1] = feat_off[i] + p.C * area;
  }
}

// The presampled buffers of plan p: float32 host vectors of the sizes the boxes give (written to when
// `as_output`); fills the offsets.
void check_sample_buffers(const FusePlan& p, const TensorView& samples, const TensorView& logit_samples,
                          bool as_output, const char* op, std::vector<int64_t>& feat_off,
                          std::vector<int64_t>& logit_off) {
  sample_offsets(p, feat_off, logit_off);
  for (auto [t, n, name] : {std::tuple<const TensorView*, int64_t, const char*>{&samples, feat_off[p.M], "samples"},
                            {&logit_samples, logit_off[p.M], "logit_samples"}}) {
    check_dtype(*t, DType::kF32, op, name);
    check_shape(*t, {n}, op, name);
    if (as_output) check_output(*t, op, name);
    if (t->device != Device::kCPU) throw_value(op, ": ", name, " must be a host (CPU) array");
  }
}

// Instance values read from planes already resampled to the boxes.
struct BoxSource {
  const FusePlan& p;
  const float* S;
  const float* SL;
  std::vector<int64_t> feat_off, logit_off;
  BoxSource(const FusePlan& plan, const float* samples, const float* logits) : p(plan), S(samples), SL(logits) {
    sample_offsets(plan, feat_off, logit_off);
  }
  const float* logit_row(int32_t i, int64_t y, float*) const {
    return SL + logit_off[i] + (y - p.box[4 * i + 1]) * p.box[4 * i + 2];
  }
  const float* feat_row(int32_t i, int64_t c, int64_t y, float*) const {
    const int64_t width = p.box[4 * i + 2], height = p.box[4 * i + 3];
    return S + feat_off[i] + (c * height + (y - p.box[4 * i + 1])) * width;
  }
};

template <class Source>
void blend(const FusePlan& p, const float* F, const float* BL, float* O, const Source& src) {
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W;
  const int64_t HW = H * W;
#pragma omp parallel
  {
    // Per thread: weights of each instance slot (0 where it does not cover), background weight,
    // sampled logits, accumulator, one sampled feature row.
    std::vector<float> wk(static_cast<size_t>(kMaxInstances) * W), lg(static_cast<size_t>(kMaxInstances) * W);
    std::vector<float> wbg(W), acc(W), tmp(W);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < B * H; ++row) {
      const int64_t b = row / H, y = row % H;
      const float* Fr = F + b * C * HW + y * W;
      float* Or = O + b * C * HW + y * W;
      const int32_t s = p.img_start[b], n = p.img_start[b + 1] - s;
      if (n == 0) {
        for (int64_t c = 0; c < C; ++c) std::memcpy(Or + c * HW, Fr + c * HW, sizeof(float) * W);
        continue;
      }
      // Instances of this image whose box covers row y (in index order), and their logit rows.
      int32_t inst[kMaxInstances];
      bool row_cov[kMaxInstances];
      const float* lrow[kMaxInstances];
      for (int32_t j = 0; j < n; ++j) {
        const int32_t i = p.order[s + j];
        inst[j] = i;
        const int64_t top = p.box[4 * i + 1], height = p.box[4 * i + 3];
        row_cov[j] = y >= top && y < top + height;
        lrow[j] = row_cov[j] ? src.logit_row(i, y, lg.data() + j * W) : nullptr;
      }
      // Softmax over [instances in index order..., background] for every pixel of the row.
      const float* Lb = BL + b * HW + y * W;
      for (int64_t x = 0; x < W; ++x) {
        bool cov[kMaxInstances];
        float l[kMaxInstances];
        bool in_union = false;
        for (int32_t j = 0; j < n; ++j) {
          const int32_t i = inst[j];
          const int64_t left = p.box[4 * i];
          cov[j] = row_cov[j] && x >= left && x < left + p.box[4 * i + 2];
          l[j] = cov[j] ? lrow[j][x - left] : 0.0f;
          in_union |= cov[j];
        }
        const float lbg = Lb[x] + (in_union ? 0.0f : kBackgroundOutsideBoxes);
        float mx = lbg;
        for (int32_t j = 0; j < n; ++j) mx = std::max(mx, l[j]);
        float e[kMaxInstances];
        float sum = 0.0f;
        for (int32_t j = 0; j < n; ++j) sum += (e[j] = std::exp(l[j] - mx));
        const float ebg = std::exp(lbg - mx);
        sum += ebg;
        for (int32_t j = 0; j < n; ++j) wk[j * W + x] = cov[j] ? e[j] / sum : 0.0f;
        wbg[x] = ebg / sum;
      }
      // Blend every channel.
      for (int64_t c = 0; c < C; ++c) {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int32_t j = 0; j < n; ++j) {
          if (!row_cov[j]) continue;
          const int32_t i = inst[j];
          const int64_t left = p.box[4 * i], width = p.box[4 * i + 2];
          const float* v = src.feat_row(i, c, y, tmp.data());
          const float* wj = wk.data() + j * W + left;
          float* a = acc.data() + left;
#pragma omp simd
          for (int64_t d = 0; d < width; ++d) a[d] += wj[d] * v[d];
        }
        const float* f = Fr + c * HW;
        float* o = Or + c * HW;
        const float* wb = wbg.data();
        const float* a = acc.data();
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) o[x] = a[x] + wb[x] * f[x];
      }
    }
  }
}

}  // namespace

void fuse_instances_cpu(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
                        const TensorView& inst_logit, const TensorView& box_info, const TensorView& inst_image,
                        const TensorView& out) {
  const FusePlan p =
      check_fuse_instances(bg_feat, bg_logit, inst_feat, inst_logit, box_info, inst_image, out, Device::kCPU);
  if (out.numel() == 0) return;
  blend(p, bg_feat.ptr<float>(), bg_logit.ptr<float>(), out.ptr<float>(),
        CropSource(p, inst_feat.ptr<float>(), inst_logit.ptr<float>()));
}

void fuse_sample_instances_cpu(const TensorView& inst_feat, const TensorView& inst_logit, const TensorView& box_info,
                               int64_t H, int64_t W, const TensorView& samples, const TensorView& logit_samples) {
  const char* op = "fuse_sample_instances";
  check_dtype(inst_feat, DType::kF32, op, "inst_feat");
  check_dim(inst_feat, 4, op, "inst_feat", "(M, C, h, w)");
  FusePlan p;
  p.B = 1, p.M = inst_feat.size(0), p.C = inst_feat.size(1), p.h = inst_feat.size(2), p.w = inst_feat.size(3);
  if (H < 1 || W < 1 || H > kMaxElements32 || W > kMaxElements32)
    throw_value(op, ": the map size must be 1..2^31-1, got ", H, "x", W);
  p.H = H, p.W = W;
  check_dtype(inst_logit, DType::kF32, op, "inst_logit");
  check_shape(inst_logit, {p.M, 1, p.h, p.w}, op, "inst_logit");
  check_dtype(box_info, DType::kI64, op, "box_info");
  check_shape(box_info, {p.M, 6}, op, "box_info");
  for (auto [t, name] : {std::pair<const TensorView*, const char*>{&inst_feat, "inst_feat"},
                         {&inst_logit, "inst_logit"}, {&box_info, "box_info"}}) {
    check_tensor(*t, op, name);
    if (t->device != Device::kCPU) throw_value(op, ": ", name, " must be a host (CPU) array");
  }
  if (p.M > kMaxInstances) throw_value(op, ": at most ", kMaxInstances, " instances, got ", p.M);
  if (p.M > 0 && (p.h < 1 || p.w < 1)) throw_value(op, ": inst_feat has an empty spatial size ", shape_str(inst_feat.shape));
  const std::vector<int64_t> zeros(static_cast<size_t>(p.M), 0);
  plan_fuse_boxes(p, box_info.ptr<int64_t>(), zeros.data(), op);
  std::vector<int64_t> feat_off, logit_off;
  check_sample_buffers(p, samples, logit_samples, true, op, feat_off, logit_off);
  const CropSource src(p, inst_feat.ptr<float>(), inst_logit.ptr<float>());
  float* S = samples.ptr<float>();
  float* SL = logit_samples.ptr<float>();
  for (int64_t i = 0; i < p.M; ++i) {
    const int64_t top = p.box[4 * i + 1], width = p.box[4 * i + 2], height = p.box[4 * i + 3];
#pragma omp parallel for schedule(static)
    for (int64_t dy = 0; dy < height; ++dy) {
      src.logit_row(static_cast<int32_t>(i), top + dy, SL + logit_off[i] + dy * width);
      for (int64_t c = 0; c < p.C; ++c)
        src.feat_row(static_cast<int32_t>(i), c, top + dy, S + feat_off[i] + (c * height + dy) * width);
    }
  }
}

void fuse_instances_presampled_cpu(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& samples,
                                   const TensorView& logit_samples, const TensorView& box_info,
                                   const TensorView& inst_image, const TensorView& out) {
  const char* op = "fuse_instances_presampled";
  check_dtype(bg_feat, DType::kF32, op, "bg_feat");
  check_dim(bg_feat, 4, op, "bg_feat", "(B, C, H, W)");
  FusePlan p;
  p.B = bg_feat.size(0), p.C = bg_feat.size(1), p.H = bg_feat.size(2), p.W = bg_feat.size(3);
  p.M = box_info.dim() == 2 ? box_info.size(0) : 0;
  check_dtype(bg_logit, DType::kF32, op, "bg_logit");
  check_shape(bg_logit, {p.B, 1, p.H, p.W}, op, "bg_logit");
  check_dtype(box_info, DType::kI64, op, "box_info");
  check_shape(box_info, {p.M, 6}, op, "box_info");
  check_dtype(inst_image, DType::kI64, op, "inst_image");
  check_shape(inst_image, {p.M}, op, "inst_image");
  check_dtype(out, DType::kF32, op, "out");
  check_shape(out, bg_feat.shape, op, "out");
  for (auto [t, name] : {std::pair<const TensorView*, const char*>{&bg_feat, "bg_feat"}, {&bg_logit, "bg_logit"},
                         {&samples, "samples"}, {&logit_samples, "logit_samples"}, {&box_info, "box_info"},
                         {&inst_image, "inst_image"}, {&out, "out"}}) {
    if (t != &out) check_tensor(*t, op, name);
    if (t->device != Device::kCPU) throw_value(op, ": ", name, " must be a host (CPU) array");
  }
  check_output(out, op, "out");
  if (p.H > kMaxElements32 || p.W > kMaxElements32) throw_value(op, ": spatial sizes must be < 2^31");
  plan_fuse_boxes(p, box_info.ptr<int64_t>(), inst_image.ptr<int64_t>(), op);
  std::vector<int64_t> feat_off, logit_off;
  check_sample_buffers(p, samples, logit_samples, false, op, feat_off, logit_off);
  if (out.numel() == 0) return;
  blend(p, bg_feat.ptr<float>(), bg_logit.ptr<float>(), out.ptr<float>(),
        BoxSource(p, samples.ptr<float>(), logit_samples.ptr<float>()));
}

}  // namespace ops
}  // namespace instcolor
