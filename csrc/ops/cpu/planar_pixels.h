// Per-pixel map over planar (N, 3, H, W) float32 -> (N, 3, H, W) float32, on all cores.
#pragma once

#include <cstdint>

namespace instcolor {
namespace cpu {

// Calls fn(c0, c1, c2, out0, out1, out2) for every pixel: c* are the three input planes' values,
// out* references into the output planes. Work is split into (image, 4096-pixel chunk) jobs.
template <class PixelFn>
inline void for_each_planar_pixel(const float* src, float* dst, int64_t N, int64_t HW, PixelFn fn) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (HW + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < N * chunks; ++job) {
    const int64_t n = job / chunks, p0 = (job % chunks) * kChunk;
    const int64_t p1 = p0 + kChunk < HW ? p0 + kChunk : HW;
    const float* s = src + n * 3 * HW;
    float* o = dst + n * 3 * HW;
    for (int64_t p = p0; p < p1; ++p) fn(s[p], s[HW + p], s[2 * HW + p], o[p], o[HW + p], o[2 * HW + p]);
  }
}

}  // namespace cpu
}  // namespace instcolor
