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

// sRGB component in [0, 1] -> linear.
IC_HD float srgb_to_linear(float v) {
  return v > IC_F(0.04045) ? fpow(fdiv(fadd(v, IC_F(0.055)), IC_F(1.055)), IC_F(2.4)) : fdiv(v, IC_F(12.92));
}

// Linear of the 8-bit level k (k / 255 computed in float32, as uint8_to_float does).
IC_HD float u8_to_linear(int k) { return srgb_to_linear(fdiv(static_cast<float>(k), IC_F(255.0))); }

IC_HD float lab_f(float t) {
  return t > IC_F(0.008856) ? fpow(t, IC_F(1 / 3.0)) : fadd(fmul(IC_F(7.787), t), IC_F(16.0 / 116.0));
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
  return t > IC_F(0.2068966) ? fmul(fmul(t, t), t) : fdiv(fsub(t, IC_F(16.0 / 116.0)), IC_F(7.787));
}

IC_HD float clamp_min0(float v) { return v < 0.0f ? 0.0f : v; }  // NaN passes, like torch.clamp

IC_HD float linear_to_srgb(float v) {
  return v > IC_F(0.0031308) ? fsub(fmul(IC_F(1.055), fpow(v, IC_F(1.0 / 2.4))), IC_F(0.055)) : fmul(IC_F(12.92), v);
}

// Normalised Lab -> sRGB (clamped at 0 only, the official lab2rgb).
IC_HD void norm_lab_to_rgb(float Ln, float an, float bn, float& r, float& g, float& b) {
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
  r = linear_to_srgb(clamp_min0(rl));
  g = linear_to_srgb(clamp_min0(gl));
  b = linear_to_srgb(clamp_min0(bl));
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

// PyTorch bilinear (align_corners=False) source index rule for one output coordinate.
// scale = float(in) / float(out); src = scale * (dst + 0.5) - 0.5 clamped at 0;
// i0 = int(src), i1 = i0 + (i0 < in - 1), l1 = clamp(src - i0, 0, 1), l0 = 1 - l1.
struct LinearTap {
  int i0, i1;
  float l0, l1;
};

IC_HD LinearTap linear_tap(int dst, int in_size, float scale) {
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
