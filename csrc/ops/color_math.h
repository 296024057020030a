// Per-pixel colour math shared by the CPU and CUDA kernels (host + device inline).
//
// Mirrors instcolor.color (the official rgb2lab / lab2rgb) operation by operation in float32:
// every constant is the Python double literal cast to float32 (as torch does with a scalar),
// thresholds compared in float32, no fused multiply-add (explicit _rn intrinsics on device;
// the C++ sources are built with -ffp-contract=off), so results differ from the torch reference
// only by the last-ulp differences of powf implementations.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define IC_HD __host__ __device__ __forceinline__
#else
#define IC_HD inline
#endif

namespace instcolor {
namespace color {

IC_HD float fmul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
IC_HD float fadd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
IC_HD float fsub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
IC_HD float fdiv(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
IC_HD float fpow(float a, float b) {
#ifdef __CUDA_ARCH__
  return powf(a, b);
#else
  return std::pow(a, b);
#endif
}

// Python literals -> float32, exactly as torch converts a wrapped scalar.
#define IC_F(x) static_cast<float>(x)

IC_HD float qnan() {
#ifdef __CUDA_ARCH__
  return __int_as_float(0x7fc00000);
#else
  return std::numeric_limits<float>::quiet_NaN();
#endif
}

// Every piecewise function of the official code evaluates BOTH branches and blends them,
// a * mask + b * (1 - mask) with mask in {0, 1}: the branch not taken still contributes
// (value * 0), which is NaN when that value is infinite or NaN (a negative base to a fractional
// power, an overflow). Out-of-domain inputs (negative / infinite / huge) therefore give NaN there;
// the functions below reproduce that exactly while evaluating pow only for the branch taken
// (the untaken pow's finiteness is decided from its base). Inputs in the documented ranges never
// reach these cases and give the plain piecewise result.

// sRGB component in [0, 1] -> linear.
IC_HD float srgb_to_linear(float v) {
  const float lin = fdiv(v, IC_F(12.92));
  if (v > IC_F(0.04045)) return fadd(fpow(fdiv(fadd(v, IC_F(0.055)), IC_F(1.055)), IC_F(2.4)), fmul(lin, 0.0f));
  return fdiv(fadd(v, IC_F(0.055)), IC_F(1.055)) < 0.0f ? qnan() : lin;  // pow(negative, 2.4) = NaN
}

// Linear of the 8-bit level k (k / 255 computed in float32, as uint8_to_float does).
IC_HD float u8_to_linear(int k) { return srgb_to_linear(fdiv(static_cast<float>(k), IC_F(255.0))); }

IC_HD float lab_f(float t) {
  const float lin = fadd(fmul(IC_F(7.787), t), IC_F(16.0 / 116.0));
  if (t > IC_F(0.008856)) return fadd(fpow(t, IC_F(1 / 3.0)), fmul(lin, 0.0f));
  return t < 0.0f ? qnan() : lin;  // pow(negative, 1/3) = NaN
}

// Linear RGB -> normalised L ((L - 50) / 100).
IC_HD float linear_to_norm_L(float r, float g, float b) {
  float y = fadd(fadd(fmul(IC_F(0.212671), r), fmul(IC_F(0.715160), g)), fmul(IC_F(0.072169), b));
  y = fdiv(y, IC_F(1.0));
  const float L = fsub(fmul(IC_F(116.0), lab_f(y)), IC_F(16.0));
  return fdiv(fsub(L, IC_F(50.0)), IC_F(100.0));
}

// Linear RGB -> normalised Lab (L - 50) / 100, a / 110, b / 110.
IC_HD void linear_to_norm_lab(float r, float g, float b, float& Ln, float& an, float& bn) {
  float x = fadd(fadd(fmul(IC_F(0.412453), r), fmul(IC_F(0.357580), g)), fmul(IC_F(0.180423), b));
  float y = fadd(fadd(fmul(IC_F(0.212671), r), fmul(IC_F(0.715160), g)), fmul(IC_F(0.072169), b));
  float z = fadd(fadd(fmul(IC_F(0.019334), r), fmul(IC_F(0.119193), g)), fmul(IC_F(0.950227), b));
  x = fdiv(x, IC_F(0.95047));
  y = fdiv(y, IC_F(1.0));
  z = fdiv(z, IC_F(1.08883));
  const float fx = lab_f(x), fy = lab_f(y), fz = lab_f(z);
  const float L = fsub(fmul(IC_F(116.0), fy), IC_F(16.0));
  const float a = fmul(IC_F(500.0), fsub(fx, fy));
  const float bb = fmul(IC_F(200.0), fsub(fy, fz));
  Ln = fdiv(fsub(L, IC_F(50.0)), IC_F(100.0));
  an = fdiv(a, IC_F(110.0));
  bn = fdiv(bb, IC_F(110.0));
}

IC_HD float lab_finv(float t) {
  const float cube = fmul(fmul(t, t), t);  // torch's x ** 3.0 is x * x * x
  const float lin = fdiv(fsub(t, IC_F(16.0 / 116.0)), IC_F(7.787));
  return t > IC_F(0.2068966) ? fadd(cube, fmul(lin, 0.0f)) : fadd(fmul(cube, 0.0f), lin);
}

IC_HD float clamp_min0(float v) { return v < 0.0f ? 0.0f : v; }  // NaN passes, like torch.clamp

// v >= 0 or NaN (clamped by the caller); the gamma branch is finite for v <= 0.0031308.
IC_HD float linear_to_srgb(float v) {
  const float lin = fmul(IC_F(12.92), v);
  if (v > IC_F(0.0031308)) return fadd(fsub(fmul(IC_F(1.055), fpow(v, IC_F(1.0 / 2.4))), IC_F(0.055)), fmul(lin, 0.0f));
  return lin;
}

// Normalised Lab -> linear RGB, clamped at 0 (the official lab2rgb before its gamma).
IC_HD void norm_lab_to_linear_rgb(float Ln, float an, float bn, float& r, float& g, float& b) {
  const float L = fadd(fmul(Ln, IC_F(100.0)), IC_F(50.0));
  const float a = fmul(an, IC_F(110.0));
  const float bb = fmul(bn, IC_F(110.0));
  const float fy = fdiv(fadd(L, IC_F(16.0)), IC_F(116.0));
  const float fx = fadd(fdiv(a, IC_F(500.0)), fy);
  const float fz = clamp_min0(fsub(fy, fdiv(bb, IC_F(200.0))));
  const float x = fmul(lab_finv(fx), IC_F(0.95047));
  const float y = fmul(lab_finv(fy), IC_F(1.0));
  const float z = fmul(lab_finv(fz), IC_F(1.08883));
  const float rl = fsub(fsub(fmul(IC_F(3.24048134), x), fmul(IC_F(1.53715152), y)), fmul(IC_F(0.49853633), z));
  const float gl = fadd(fadd(fmul(IC_F(-0.96925495), x), fmul(IC_F(1.87599), y)), fmul(IC_F(0.04155593), z));
  const float bl = fadd(fsub(fmul(IC_F(0.05564664), x), fmul(IC_F(0.20404134), y)), fmul(IC_F(1.05731107), z));
  r = clamp_min0(rl);
  g = clamp_min0(gl);
  b = clamp_min0(bl);
}

// Normalised Lab -> sRGB (clamped at 0 only, the official lab2rgb).
IC_HD void norm_lab_to_rgb(float Ln, float an, float bn, float& r, float& g, float& b) {
  norm_lab_to_linear_rgb(Ln, an, bn, r, g, b);
  r = linear_to_srgb(r);
  g = linear_to_srgb(g);
  b = linear_to_srgb(b);
}

// Clamp to [0, 1], round(x * 255) half to even (the official img_as_ubyte). NaN -> 0.
IC_HD uint8_t to_u8(float v) {
  if (!(v > 0.0f)) return 0;  // also NaN
  if (v > 1.0f) v = 1.0f;
#ifdef __CUDA_ARCH__
  return static_cast<uint8_t>(__float2int_rn(__fmul_rn(v, 255.0f)));
#else
  return static_cast<uint8_t>(std::nearbyint(v * 255.0f));
#endif
}

// Normalised L/ab of 8-bit levels: table of the 256 linear values (host-computed once).
struct LinearLut {
  float v[256];
};

inline const LinearLut& linear_lut() {
  static const LinearLut lut = [] {
    LinearLut l{};
    for (int k = 0; k < 256; ++k) l.v[k] = u8_to_linear(k);
    return l;
  }();
  return lut;
}

// PyTorch bilinear (align_corners=False) source index rule for one output coordinate
// (ATen compute_source_index_and_lambda). in == out: i0 = i1 = dst, l0 = 1, l1 = 0 (a plain copy:
// a neighbour is never touched, so an infinite / NaN neighbour does not leak in as 0 * inf).
// Otherwise scale = float(in) / float(out); src = scale * (dst + 0.5) - 0.5 clamped at 0;
// i0 = int(src), i1 = i0 + (i0 < in - 1), l1 = clamp(src - i0, 0, 1), l0 = 1 - l1.
struct LinearTap {
  int i0, i1;
  float l0, l1;
};

IC_HD LinearTap linear_tap(int dst, int in_size, int out_size, float scale) {
  if (in_size == out_size) return LinearTap{dst, dst, 1.0f, 0.0f};
  float src = fsub(fmul(scale, fadd(static_cast<float>(dst), 0.5f)), 0.5f);
  if (src < 0.0f) src = 0.0f;
  LinearTap t;
  t.i0 = static_cast<int>(src);
  if (t.i0 > in_size - 1) t.i0 = in_size - 1;
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  float l1 = fsub(src, static_cast<float>(t.i0));
  l1 = l1 < 0.0f ? 0.0f : (l1 > 1.0f ? 1.0f : l1);
  t.l1 = l1;
  t.l0 = fsub(1.0f, l1);
  return t;
}

inline float linear_scale(int64_t in_size, int64_t out_size) {
  return static_cast<float>(in_size) / static_cast<float>(out_size);
}

}  // namespace color
}  // namespace instcolor
