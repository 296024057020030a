// CPU rgb_to_lab (contract: ops/rgb_to_lab.h).
#include "ops/rgb_to_lab.h"

#include "ops/color_math.h"
#include "ops/cpu/planar_pixels.h"
#include "ops/cpu/resample_u8.h"
#include "ops/pillow_resample.h"

namespace instcolor {
namespace ops {
namespace {

// One row of interleaved RGB uint8 -> three planes of normalised Lab.
inline void lab_row_u8(const uint8_t* __restrict rgb, int64_t n, const color::LinearLut& lut, float* __restrict L,
                       float* __restrict a, float* __restrict b) {
  for (int64_t x = 0; x < n; ++x) {
    color::linear_to_norm_lab(lut.v[rgb[3 * x]], lut.v[rgb[3 * x + 1]], lut.v[rgb[3 * x + 2]], L[x], a[x], b[x]);
  }
}

}  // namespace

void rgb_to_lab_u8_cpu(const TensorView& image, int64_t size, const TensorView& out) {
  check_rgb_to_lab_u8(image, size, out, Device::kCPU);
  if (out.numel() == 0) return;
  const int64_t N = image.size(0), H = image.size(1), W = image.size(2);
  const color::LinearLut& lut = color::linear_lut();
  const uint8_t* src = image.ptr<uint8_t>();
  float* dst = out.ptr<float>();
  if (size == 0) {
    const int64_t HW = H * W;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < N * H; ++row) {
      const int64_t n = row / H, y = row % H;
      float* base = dst + n * 3 * HW + y * W;
      lab_row_u8(src + row * W * 3, W, lut, base, base + HW, base + 2 * HW);
    }
    return;
  }
  const AxisCoeffs cx = pillow_bilinear_coeffs(W, size);
  const AxisCoeffs cy = pillow_bilinear_coeffs(H, size);
  const int64_t SS = size * size;
  for (int64_t n = 0; n < N; ++n) {
    float* base = dst + n * 3 * SS;
    cpu::resample_crop_rgb(src + n * H * W * 3, W * 3, 0, 0, cx, cy, [&](int oy, const uint8_t* row) {
      float* p = base + oy * size;
      lab_row_u8(row, size, lut, p, p + SS, p + 2 * SS);
    });
  }
}

void rgb_to_lab_f32_cpu(const TensorView& rgb, const TensorView& out) {
  check_rgb_to_lab_f32(rgb, out, Device::kCPU);
  if (out.numel() == 0) return;
  cpu::for_each_planar_pixel(rgb.ptr<float>(), out.ptr<float>(), rgb.size(0), rgb.size(2) * rgb.size(3),
                             [](float r, float g, float b, float& L, float& A, float& B) {
                               color::linear_to_norm_lab(color::srgb_to_linear(r), color::srgb_to_linear(g),
                                                         color::srgb_to_linear(b), L, A, B);
                             });
}

}  // namespace ops
}  // namespace instcolor
