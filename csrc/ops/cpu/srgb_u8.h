// Linear RGB component -> 8-bit sRGB level without pow (CPU): to_u8(linear_to_srgb(v)) exactly.
//
// That composite is a non-decreasing step function of v with 255 steps. [2^-14, 1] is cut into
// buckets by the float's exponent and its top kMantissaBits mantissa bits (15 x 256 buckets); each
// bucket holds at most one step (checked when the table is built), so a level is the bucket's
// first level plus (v >= the bucket's step position): a table load and one compare instead of a
// powf. The step positions are found by bisection over float bit patterns with the composite
// itself, so this equals the composite for every float as long as the composite is non-decreasing
// in float arithmetic on [0, 1] (checked exhaustively by srgb_u8_mismatches, which
// tests/test_ops.py runs). Below 2^-14 the level is 0 (12.92 * v * 255 < 0.21). Outside [0, 1]: NaN
// and v <= 0 give 0 as the composite does; 1 < v <= kSafeMax gives 255 (the gamma branch there is
// > 1 and finite); larger or infinite v take the composite itself (its 12.92 * v * 0 is NaN there:
// level 0, as in the official code). If a bucket ever held two steps, every value takes the
// composite (slow but exact).
#pragma once

#include <cstdint>
#include <cstring>

#include "ops/color_math.h"

namespace instcolor {
namespace color {

inline uint8_t srgb_u8_exact(float v) { return to_u8(linear_to_srgb(clamp_min0(v))); }

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

constexpr int kMantissaBits = 8;
constexpr uint32_t kLowBits = 0x38800000u;                    // 2^-14
constexpr uint32_t kShift = 23 - kMantissaBits;
constexpr int kBuckets = ((0x3f800000u - kLowBits) >> kShift) + 1;  // through the bucket of 1.0
constexpr float kSafeMax = 1e30f;  // 12.92 * v and pow(v, 1 / 2.4) stay finite below this

struct SrgbU8Steps {
  float step[kBuckets];    // smallest v in the bucket with level first + 1 (+inf: no step inside)
  uint8_t first[kBuckets]; // level at the bucket's smallest v
  bool ok = true;          // every bucket holds at most one step
};

inline const SrgbU8Steps& srgb_u8_steps() {
  static const SrgbU8Steps steps = [] {
    SrgbU8Steps s{};
    s.ok = srgb_u8_exact(bits_float(kLowBits - 1)) == 0;
    for (int i = 0; i < kBuckets; ++i) {
      const uint32_t lo = kLowBits + (static_cast<uint32_t>(i) << kShift);
      uint32_t hi = lo + (1u << kShift) - 1;
      if (hi > 0x3f800000u) hi = 0x3f800000u;
      const int a = srgb_u8_exact(bits_float(lo)), b = srgb_u8_exact(bits_float(hi));
      s.first[i] = static_cast<uint8_t>(a);
      s.step[i] = bits_float(0x7f800000u);
      if (b - a > 1) s.ok = false;
      if (b > a) {
        uint32_t l = lo, h = hi;  // smallest bit pattern with level > a
        while (l < h) {
          const uint32_t mid = l + (h - l) / 2;
          if (srgb_u8_exact(bits_float(mid)) > a) h = mid; else l = mid + 1;
        }
        s.step[i] = bits_float(l);
      }
    }
    return s;
  }();
  return steps;
}

inline uint8_t srgb_u8(float v, const SrgbU8Steps& s) {
  if (!s.ok) return srgb_u8_exact(v);
  if (!(v > 0.0f)) return 0;  // NaN, negative, zero
  if (v > 1.0f) return v <= kSafeMax ? 255 : srgb_u8_exact(v);
  const uint32_t u = float_bits(v);
  if (u < kLowBits) return 0;
  const uint32_t i = (u - kLowBits) >> kShift;
  return static_cast<uint8_t>(s.first[i] + (v >= s.step[i] ? 1 : 0));
}

// Floats in [lo, hi] (bit patterns, non-negative) where srgb_u8 differs from srgb_u8_exact.
inline int64_t srgb_u8_mismatches(uint32_t lo, uint32_t hi) {
  const SrgbU8Steps& s = srgb_u8_steps();
  int64_t bad = 0;
#pragma omp parallel for reduction(+ : bad) schedule(static)
  for (int64_t u = lo; u <= static_cast<int64_t>(hi); ++u) {
    const float v = bits_float(static_cast<uint32_t>(u));
    bad += srgb_u8(v, s) != srgb_u8_exact(v);
  }
  return bad;
}

}  // namespace color
}  // namespace instcolor
