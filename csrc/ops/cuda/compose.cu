// CUDA compose / compose_processed (contract: ops/compose.h).
#include "ops/color_math.h"
#include "ops/compose.h"
#include "ops/cuda/cuda_utils.cuh"
#include "ops/cuda/resample_u8.cuh"

namespace instcolor {
namespace ops {
namespace {

constexpr int kThreads = 256;

__global__ void compose_kernel(const uint8_t* __restrict__ img, const float* __restrict__ ab, uint8_t* __restrict__ out,
                               color::LinearLut lut, int H, int W, int h, int w, float sy, float sx) {
  __shared__ float slut[256];
  cuda::load_lut(lut, slut);
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= H * W) return;
  const int y = p / W, x = p - y * W;
  const color::LinearTap ty = color::linear_tap(y, h, H, sy), tx = color::linear_tap(x, w, W, sx);
  const float* A = ab;
  const float* Bq = ab + h * w;
  const int r0 = ty.i0 * w, r1 = ty.i1 * w;
  const float av = ty.l0 * (tx.l0 * __ldg(A + r0 + tx.i0) + tx.l1 * __ldg(A + r0 + tx.i1)) +
                   ty.l1 * (tx.l0 * __ldg(A + r1 + tx.i0) + tx.l1 * __ldg(A + r1 + tx.i1));
  const float bv = ty.l0 * (tx.l0 * __ldg(Bq + r0 + tx.i0) + tx.l1 * __ldg(Bq + r0 + tx.i1)) +
                   ty.l1 * (tx.l0 * __ldg(Bq + r1 + tx.i0) + tx.l1 * __ldg(Bq + r1 + tx.i1));
  const uint8_t* s = img + 3 * static_cast<int64_t>(p);
  const float Ln = color::linear_to_norm_L(slut[s[0]], slut[s[1]], slut[s[2]]);
  float r, g, b;
  color::norm_lab_to_rgb(Ln, av, bv, r, g, b);
  uint8_t* o = out + 3 * static_cast<int64_t>(p);
  o[0] = color::to_u8(r);
  o[1] = color::to_u8(g);
  o[2] = color::to_u8(b);
}

__global__ void compose_processed_kernel(const float* __restrict__ L, const float* __restrict__ ab,
                                         uint8_t* __restrict__ out, int HW) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= HW) return;
  float r, g, b;
  color::norm_lab_to_rgb(L[p], ab[p], ab[HW + p], r, g, b);
  uint8_t* o = out + 3 * static_cast<int64_t>(p);
  o[0] = color::to_u8(r);
  o[1] = color::to_u8(g);
  o[2] = color::to_u8(b);
}

}  // namespace

void compose_cuda(const TensorView& image, const TensorView& ab, const TensorView& out, std::uintptr_t stream_handle) {
  check_compose(image, ab, out, Device::kCUDA);
  check_int32_indexable(ab, "compose", "ab");
  if (out.numel() == 0) return;
  const int64_t H = image.size(0), W = image.size(1), h = ab.size(1), w = ab.size(2);
  cuda::DeviceGuard guard(image.device_id);
  compose_kernel<<<cuda::grid_1d(H * W, kThreads), kThreads, 0, cuda::as_stream(stream_handle)>>>(
      image.ptr<uint8_t>(), ab.ptr<float>(), out.ptr<uint8_t>(), color::linear_lut(), static_cast<int>(H),
      static_cast<int>(W), static_cast<int>(h), static_cast<int>(w), color::linear_scale(h, H),
      color::linear_scale(w, W));
  cuda::check_launch("compose kernel");
}

void compose_processed_cuda(const TensorView& L, const TensorView& ab, const TensorView& out,
                            std::uintptr_t stream_handle) {
  check_compose_processed(L, ab, out, Device::kCUDA);
  if (out.numel() == 0) return;
  const int64_t HW = L.size(1) * L.size(2);
  cuda::DeviceGuard guard(L.device_id);
  compose_processed_kernel<<<cuda::grid_1d(HW, kThreads), kThreads, 0, cuda::as_stream(stream_handle)>>>(
      L.ptr<float>(), ab.ptr<float>(), out.ptr<uint8_t>(), static_cast<int>(HW));
  cuda::check_launch("compose_processed kernel");
}

}  // namespace ops
}  // namespace instcolor
