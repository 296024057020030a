// Device side of the Pillow-BILINEAR RGB uint8 resampling (ops/pillow_resample.h), one output
// pixel per thread: the horizontal pass is evaluated for each vertical tap (the same integer
// arithmetic and uint8 rounding as Pillow, so the bytes are identical to the CPU path).
#pragma once

#include <cstdint>
#include <vector>

#include "ops/color_math.h"
#include "ops/cuda/cuda_utils.cuh"
#include "ops/pillow_resample.h"

namespace instcolor {
namespace cuda {

struct ResamplePlan {
  const uint8_t* src;  // image base
  int64_t row_stride;  // bytes
  int x0, y0;          // crop origin
  int cx_off, cx_stride, cy_off, cy_stride;  // packed AxisCoeffs in the int32 table
};

__device__ __forceinline__ int clip8_dev(int v) {
  v >>= kPillowPrecisionBits;
  return v < 0 ? 0 : (v > 255 ? 255 : v);
}

__device__ __forceinline__ void resample_pixel(const ResamplePlan& pl, const int32_t* __restrict__ coeffs, int ox,
                                               int oy, int& r, int& g, int& b) {
  const int32_t* rx = coeffs + pl.cx_off + static_cast<int64_t>(ox) * pl.cx_stride;
  const int32_t* ry = coeffs + pl.cy_off + static_cast<int64_t>(oy) * pl.cy_stride;
  const int xs = rx[0], xn = rx[1], ys = ry[0], yn = ry[1];
  int a0 = 1 << (kPillowPrecisionBits - 1), a1 = a0, a2 = a0;
  for (int j = 0; j < yn; ++j) {
    const uint8_t* row = pl.src + static_cast<int64_t>(pl.y0 + ys + j) * pl.row_stride + static_cast<int64_t>(pl.x0 + xs) * 3;
    int h0 = 1 << (kPillowPrecisionBits - 1), h1 = h0, h2 = h0;
    for (int k = 0; k < xn; ++k) {
      const int w = rx[2 + k];
      h0 += static_cast<int>(row[3 * k + 0]) * w;
      h1 += static_cast<int>(row[3 * k + 1]) * w;
      h2 += static_cast<int>(row[3 * k + 2]) * w;
    }
    const int wy = ry[2 + j];
    a0 += clip8_dev(h0) * wy;
    a1 += clip8_dev(h1) * wy;
    a2 += clip8_dev(h2) * wy;
  }
  r = clip8_dev(a0);
  g = clip8_dev(a1);
  b = clip8_dev(a2);
}

// Host: append a coefficient table to `table`, return its offset.
inline int append_coeffs(std::vector<int32_t>& table, const AxisCoeffs& c) {
  const size_t off = table.size();
  if (off + c.packed.size() > static_cast<size_t>(INT32_MAX)) throw_value("resample: coefficient table too large");
  table.insert(table.end(), c.packed.begin(), c.packed.end());
  return static_cast<int>(off);
}

// Copy the 256-entry linear LUT into shared memory (call before any early return).
__device__ __forceinline__ void load_lut(const color::LinearLut& lut, float* s) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) s[i] = lut.v[i];
  __syncthreads();
}

}  // namespace cuda
}  // namespace instcolor
