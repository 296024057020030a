// CPU compose / compose_processed (contract: ops/compose.h).
#include "ops/compose.h"

#include <vector>

#include "ops/color_math.h"
#include "ops/cpu/srgb_u8.h"

namespace instcolor {
namespace ops {

namespace {

// Normalised Lab -> linear RGB over a row, in its own loop so that the compiler can vectorise it
// (this file is built with -fno-trapping-math: both sides of each select are computed anyway, so
// if-conversion is allowed; the values are those of the scalar code, lane by lane).
void lab_row_to_linear(const float* __restrict Ln, const float* __restrict av, const float* __restrict bv,
                       float* __restrict r, float* __restrict g, float* __restrict b, int n) {
  for (int i = 0; i < n; ++i) {
    float x, y, z;
    color::norm_lab_to_linear_rgb(Ln[i], av[i], bv[i], x, y, z);
    r[i] = x;
    g[i] = y;
    b[i] = z;
  }
}

}  // namespace

void compose_cpu(const TensorView& image, const TensorView& ab, const TensorView& out) {
  check_compose(image, ab, out, Device::kCPU);
  if (out.numel() == 0) return;
  const int64_t H = image.size(0), W = image.size(1), h = ab.size(1), w = ab.size(2);
  const float sy = color::linear_scale(h, H), sx = color::linear_scale(w, W);
  std::vector<color::LinearTap> tx(static_cast<size_t>(W));
  for (int64_t x = 0; x < W; ++x) tx[x] = color::linear_tap(static_cast<int>(x), static_cast<int>(w), static_cast<int>(W), sx);
  const color::LinearLut& lut = color::linear_lut();
  const color::SrgbU8Steps& steps = color::srgb_u8_steps();
  const uint8_t* img = image.ptr<uint8_t>();
  const float* A = ab.ptr<float>();
  const float* Bp = A + h * w;
  uint8_t* o = out.ptr<uint8_t>();
#pragma omp parallel
  {
    // One row at a time in three passes: gather (bilinear ab, L of the pixel), colour math
    // (vectorised), 8-bit sRGB. Row buffers per thread.
    std::vector<float> buf(static_cast<size_t>(W) * 6);
    float *La = buf.data(), *Aa = La + W, *Ba = Aa + W, *Ra = Ba + W, *Ga = Ra + W, *Bl = Ga + W;
#pragma omp for schedule(static)
    for (int64_t y = 0; y < H; ++y) {
      const color::LinearTap ty = color::linear_tap(static_cast<int>(y), static_cast<int>(h), static_cast<int>(H), sy);
      const float *a0 = A + ty.i0 * w, *a1 = A + ty.i1 * w, *b0 = Bp + ty.i0 * w, *b1 = Bp + ty.i1 * w;
      const uint8_t* src = img + y * W * 3;
      uint8_t* dst = o + y * W * 3;
      for (int64_t x = 0; x < W; ++x) {
        const color::LinearTap& t = tx[x];
        Aa[x] = ty.l0 * (t.l0 * a0[t.i0] + t.l1 * a0[t.i1]) + ty.l1 * (t.l0 * a1[t.i0] + t.l1 * a1[t.i1]);
        Ba[x] = ty.l0 * (t.l0 * b0[t.i0] + t.l1 * b0[t.i1]) + ty.l1 * (t.l0 * b1[t.i0] + t.l1 * b1[t.i1]);
        La[x] = color::linear_to_norm_L(lut.v[src[3 * x]], lut.v[src[3 * x + 1]], lut.v[src[3 * x + 2]]);
      }
      lab_row_to_linear(La, Aa, Ba, Ra, Ga, Bl, static_cast<int>(W));
      for (int64_t x = 0; x < W; ++x) {
        dst[3 * x + 0] = color::srgb_u8(Ra[x], steps);
        dst[3 * x + 1] = color::srgb_u8(Ga[x], steps);
        dst[3 * x + 2] = color::srgb_u8(Bl[x], steps);
      }
    }
  }
}

void compose_processed_cpu(const TensorView& L, const TensorView& ab, const TensorView& out) {
  check_compose_processed(L, ab, out, Device::kCPU);
  if (out.numel() == 0) return;
  const int64_t HW = L.size(1) * L.size(2);
  const float* l = L.ptr<float>();
  const float* a = ab.ptr<float>();
  uint8_t* o = out.ptr<uint8_t>();
  const color::SrgbU8Steps& steps = color::srgb_u8_steps();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < HW; ++p) {
    float r, g, b;
    color::norm_lab_to_linear_rgb(l[p], a[p], a[HW + p], r, g, b);
    o[3 * p + 0] = color::srgb_u8(r, steps);
    o[3 * p + 1] = color::srgb_u8(g, steps);
    o[3 * p + 2] = color::srgb_u8(b, steps);
  }
}

}  // namespace ops
}  // namespace instcolor
