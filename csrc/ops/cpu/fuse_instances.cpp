// CPU fuse_instances (contract: ops/fuse_instances.h).
//
// Parallel over output rows (b, y). Per row: the softmax weights of every pixel are computed once
// (instance logits sampled on the fly), then each channel is blended with the instance features
// sampled on the fly; nothing of size M x C x H x W is materialised.
#include "ops/fuse_instances.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

}  // namespace

void fuse_instances_cpu(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
                        const TensorView& inst_logit, const TensorView& box_info, const TensorView& inst_image,
                        const TensorView& out) {
  const FusePlan p =
      check_fuse_instances(bg_feat, bg_logit, inst_feat, inst_logit, box_info, inst_image, out, Device::kCPU);
  if (out.numel() == 0) return;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, h = p.h, w = p.w;
  const int64_t HW = H * W, hw = h * w;
  const float* F = bg_feat.ptr<float>();
  const float* BL = bg_logit.ptr<float>();
  const float* IF = inst_feat.ptr<float>();
  const float* IL = inst_logit.ptr<float>();
  float* O = out.ptr<float>();

  std::vector<XTable> xt(static_cast<size_t>(p.M));
  for (int64_t i = 0; i < p.M; ++i) {
    const int64_t width = p.box[4 * i + 2];
    XTable& t = xt[i];
    t.x0.resize(width), t.x1.resize(width), t.l0.resize(width), t.l1.resize(width);
    for (int64_t d = 0; d < width; ++d) {
      const color::LinearTap tap = color::linear_tap(static_cast<int>(d), static_cast<int>(w), static_cast<int>(width), p.scale[2 * i]);
      t.x0[d] = tap.i0, t.x1[d] = tap.i1, t.l0[d] = tap.l0, t.l1[d] = tap.l1;
    }
  }

#pragma omp parallel
  {
    // Per thread: weights of each instance slot (0 where it does not cover), background weight,
    // sampled values, accumulator.
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
      // Instances of this image whose box covers row y (in index order).
      int32_t inst[kMaxInstances];
      bool row_cov[kMaxInstances];
      color::LinearTap ty[kMaxInstances];
      for (int32_t j = 0; j < n; ++j) {
        const int32_t i = p.order[s + j];
        inst[j] = i;
        const int64_t top = p.box[4 * i + 1], height = p.box[4 * i + 3];
        row_cov[j] = y >= top && y < top + height;
        if (row_cov[j]) {
          ty[j] = color::linear_tap(static_cast<int>(y - top), static_cast<int>(h), static_cast<int>(height),
                                      p.scale[2 * i + 1]);
          sample_row(IL + static_cast<int64_t>(i) * hw, w, ty[j], xt[i], p.box[4 * i + 2], lg.data() + j * W);
        }
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
          l[j] = cov[j] ? lg[j * W + (x - left)] : 0.0f;
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
          sample_row(IF + (static_cast<int64_t>(i) * C + c) * hw, w, ty[j], xt[i], width, tmp.data());
          const float* wj = wk.data() + j * W + left;
          float* a = acc.data() + left;
#pragma omp simd
          for (int64_t d = 0; d < width; ++d) a[d] += wj[d] * tmp[d];
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

}  // namespace ops
}  // namespace instcolor
