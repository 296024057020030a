#include "ops/pillow_resample.h"

#include <cmath>

#include "ops/common.h"

namespace instcolor {

int AxisCoeffs::last_tap_end() const {
  int end = 0;
  for (int i = 0; i < out_size; ++i) {
    const int32_t* r = row(i);
    if (r[0] + r[1] > end) end = r[0] + r[1];
  }
  return end;
}

AxisCoeffs pillow_bilinear_coeffs(int64_t in_size, int64_t out_size) {
  if (in_size < 1 || out_size < 1) throw_value("resample: sizes must be >= 1, got ", in_size, " -> ", out_size);
  if (in_size > (int64_t(1) << 24) || out_size > (int64_t(1) << 24))
    throw_value("resample: size too large (", in_size, " -> ", out_size, ")");
  AxisCoeffs c;
  c.in_size = static_cast<int>(in_size);
  c.out_size = static_cast<int>(out_size);
  if (in_size == out_size) {  // Pillow skips this pass; identity table gives identical bytes
    c.ksize = 1;
    c.packed.resize(static_cast<size_t>(out_size) * 3);
    for (int i = 0; i < c.out_size; ++i) {
      c.packed[i * 3 + 0] = i;
      c.packed[i * 3 + 1] = 1;
      c.packed[i * 3 + 2] = 1 << kPillowPrecisionBits;
    }
    return c;
  }
  // Same double-precision expressions, in the same order, as Pillow's precompute_coeffs.
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 1.0 * filterscale;
  const int ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.ksize = ksize;
  c.packed.assign(static_cast<size_t>(out_size) * (ksize + 2), 0);
  std::vector<double> k(static_cast<size_t>(ksize));
  const double ss = 1.0 / filterscale;
  for (int xx = 0; xx < c.out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    double ww = 0.0;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > c.in_size) xmax = c.in_size;
    xmax -= xmin;
    if (xmax > ksize) xmax = ksize;  // cannot happen; keeps the table in bounds
    if (xmax < 1) {                  // cannot happen for in, out >= 1; keep a valid tap
      xmin = xmin >= c.in_size ? c.in_size - 1 : xmin;
      xmax = 0;
    }
    for (int x = 0; x < xmax; ++x) {
      double w = (x + xmin - center + 0.5) * ss;
      if (w < 0.0) w = -w;
      w = w < 1.0 ? 1.0 - w : 0.0;
      k[x] = w;
      ww += w;
    }
    int32_t* row = c.packed.data() + static_cast<size_t>(xx) * (ksize + 2);
    row[0] = xmin;
    row[1] = xmax;
    for (int x = 0; x < xmax; ++x) {
      double w = k[x];
      if (ww != 0.0) w /= ww;
      const double fixed = w * (1 << kPillowPrecisionBits);
      row[2 + x] = w < 0 ? static_cast<int32_t>(-0.5 + fixed) : static_cast<int32_t>(0.5 + fixed);
    }
  }
  return c;
}

}  // namespace instcolor
