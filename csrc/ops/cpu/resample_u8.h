// CPU Pillow-BILINEAR resampling of an interleaved RGB uint8 crop (see ops/pillow_resample.h).
#pragma once

#include <cstdint>
#include <vector>

#include "ops/pillow_resample.h"

namespace instcolor {
namespace cpu {

inline uint8_t clip8(int32_t v) {
  v >>= kPillowPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass of one row: src points at pixel (x0, y) of the crop.
inline void resample_h_row(const uint8_t* __restrict src, const AxisCoeffs& cx, uint8_t* __restrict dst) {
  const int stride = cx.stride();
  const int32_t* r = cx.packed.data();
  for (int ox = 0; ox < cx.out_size; ++ox, r += stride) {
    const uint8_t* p = src + static_cast<int64_t>(r[0]) * 3;
    const int32_t* w = r + 2;
    int32_t a0 = 1 << (kPillowPrecisionBits - 1), a1 = a0, a2 = a0;
    for (int k = 0; k < r[1]; ++k) {
      a0 += p[3 * k + 0] * w[k];
      a1 += p[3 * k + 1] * w[k];
      a2 += p[3 * k + 2] * w[k];
    }
    dst[3 * ox + 0] = clip8(a0);
    dst[3 * ox + 1] = clip8(a1);
    dst[3 * ox + 2] = clip8(a2);
  }
}

// Vertical pass of output row oy; tmp row 0 is input row `ylo`; n = out_w * 3 bytes per row.
inline void resample_v_row(const uint8_t* __restrict tmp, int64_t n, const AxisCoeffs& cy, int oy, int ylo,
                           int32_t* __restrict acc, uint8_t* __restrict dst) {
  const int32_t* r = cy.row(oy);
  for (int64_t i = 0; i < n; ++i) acc[i] = 1 << (kPillowPrecisionBits - 1);
  for (int k = 0; k < r[1]; ++k) {
    const int32_t w = r[2 + k];
    const uint8_t* __restrict row = tmp + static_cast<int64_t>(r[0] + k - ylo) * n;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<int32_t>(row[i]) * w;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = clip8(acc[i]);
}

// Resample the crop with top-left (x0, y0) of `img` (row stride in bytes) to
// cx.out_size x cy.out_size and call emit(oy, row_bytes) for every output row, from inside an
// OpenMP parallel region (rows are distributed over the threads; emit must be thread-safe).
template <class Emit>
void resample_crop_rgb(const uint8_t* img, int64_t row_stride, int64_t x0, int64_t y0, const AxisCoeffs& cx,
                       const AxisCoeffs& cy, Emit&& emit) {
  const int ylo = cy.first_tap();
  const int rows = cy.last_tap_end() - ylo;
  const int64_t n = static_cast<int64_t>(cx.out_size) * 3;
  std::vector<uint8_t> tmp(static_cast<size_t>(rows) * static_cast<size_t>(n));
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int r = 0; r < rows; ++r)
      resample_h_row(img + (y0 + ylo + r) * row_stride + x0 * 3, cx, tmp.data() + static_cast<int64_t>(r) * n);
    std::vector<int32_t> acc(static_cast<size_t>(n));
    std::vector<uint8_t> out(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int oy = 0; oy < cy.out_size; ++oy) {
      resample_v_row(tmp.data(), n, cy, oy, ylo, acc.data(), out.data());
      emit(oy, out.data());
    }
  }
}

}  // namespace cpu
}  // namespace instcolor
