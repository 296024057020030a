// Pillow (7.0 - 11.3) BILINEAR resampling coefficients for one axis, bit-exact.
//
// Pillow's ImagingResample: separable, horizontal pass first, then vertical, the intermediate
// image rounded to uint8. Per axis (in n -> out m): scale = n / m, filterscale = max(scale, 1),
// support = filterscale; center = (i + 0.5) * scale; taps [max(int(center - support + 0.5), 0),
// min(int(center + support + 0.5), n)); weight of tap j = max(0, 1 - |(j - center + 0.5) / filterscale|),
// normalised by their sum, converted to fixed point with 22 fraction bits (int(w * 2^22 + 0.5)).
// Output = clip((2^21 + sum(pixel * weight)) >> 22, 0, 255).
// When n == m Pillow skips the pass; the table is then the identity (1 tap, weight 2^22), which
// gives the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace instcolor {

constexpr int kPillowPrecisionBits = 22;

struct AxisCoeffs {
  int in_size = 0;
  int out_size = 0;
  int ksize = 0;   // weights per output index (padded with zeros)
  // Packed per output index i: [start, count, w_0 .. w_{ksize-1}]  (stride ksize + 2).
  std::vector<int32_t> packed;
  int stride() const { return ksize + 2; }
  const int32_t* row(int i) const { return packed.data() + static_cast<size_t>(i) * stride(); }
  int first_tap() const { return packed.empty() ? 0 : packed[0]; }
  // One past the last input index any output uses.
  int last_tap_end() const;
};

// Throws ValueError for sizes < 1 or absurdly large filters.
AxisCoeffs pillow_bilinear_coeffs(int64_t in_size, int64_t out_size);

}  // namespace instcolor
