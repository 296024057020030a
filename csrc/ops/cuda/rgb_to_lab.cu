// CUDA rgb_to_lab (contract: ops/rgb_to_lab.h). One launch per call; caller's stream.
#include <cstring>
#include <vector>

#include "ops/color_math.h"
#include "ops/cuda/cuda_utils.cuh"
#include "ops/cuda/resample_u8.cuh"
#include "ops/rgb_to_lab.h"

namespace instcolor {
namespace ops {
namespace {

constexpr int kThreads = 256;

// Resampled: grid (pixels / 256, N); plan n = image n.
__global__ void rgb_to_lab_resample_kernel(const cuda::ResamplePlan* __restrict__ plans,
                                           const int32_t* __restrict__ coeffs, color::LinearLut lut,
                                           float* __restrict__ out, int S) {
  __shared__ float slut[256];
  cuda::load_lut(lut, slut);
  const int64_t SS = static_cast<int64_t>(S) * S;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= SS) return;
  const int n = blockIdx.y;
  const int oy = static_cast<int>(p / S), ox = static_cast<int>(p - static_cast<int64_t>(oy) * S);
  int r, g, b;
  cuda::resample_pixel(plans[n], coeffs, ox, oy, r, g, b);
  float* o = out + static_cast<int64_t>(n) * 3 * SS + p;
  float L, A, B;
  color::linear_to_norm_lab(slut[r], slut[g], slut[b], L, A, B);
  o[0] = L;
  o[SS] = A;
  o[2 * SS] = B;
}

// No resize: grid (pixels / 256, N).
__global__ void rgb_to_lab_u8_kernel(const uint8_t* __restrict__ img, color::LinearLut lut, float* __restrict__ out,
                                     int64_t HW) {
  __shared__ float slut[256];
  cuda::load_lut(lut, slut);
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= HW) return;
  const int64_t n = blockIdx.y;
  const uint8_t* s = img + (n * HW + p) * 3;
  float* o = out + n * 3 * HW + p;
  float L, A, B;
  color::linear_to_norm_lab(slut[s[0]], slut[s[1]], slut[s[2]], L, A, B);
  o[0] = L;
  o[HW] = A;
  o[2 * HW] = B;
}

__global__ void rgb_to_lab_f32_kernel(const float* __restrict__ rgb, float* __restrict__ out, int64_t HW) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= HW) return;
  const int64_t base = static_cast<int64_t>(blockIdx.y) * 3 * HW + p;
  float L, A, B;
  color::linear_to_norm_lab(color::srgb_to_linear(rgb[base]), color::srgb_to_linear(rgb[base + HW]),
                            color::srgb_to_linear(rgb[base + 2 * HW]), L, A, B);
  out[base] = L;
  out[base + HW] = A;
  out[base + 2 * HW] = B;
}

}  // namespace

void rgb_to_lab_u8_cuda(const TensorView& image, int64_t size, const TensorView& out, std::uintptr_t stream_handle) {
  const char* op = "rgb_to_lab";
  check_rgb_to_lab_u8(image, size, out, Device::kCUDA);
  check_int32_indexable(image, op, "rgb");
  check_int32_indexable(out, op, "out");
  if (out.numel() == 0) return;
  const int64_t N = image.size(0), H = image.size(1), W = image.size(2);
  const int64_t OHW = out.size(2) * out.size(3);
  cuda::check_grid(cuda::grid_1d(OHW, kThreads), N, 1, op);
  cuda::DeviceGuard guard(image.device_id);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  const color::LinearLut& lut = color::linear_lut();
  const dim3 grid(cuda::grid_1d(OHW, kThreads), static_cast<unsigned>(N));
  if (size == 0) {
    rgb_to_lab_u8_kernel<<<grid, kThreads, 0, stream>>>(image.ptr<uint8_t>(), lut, out.ptr<float>(), OHW);
    cuda::check_launch("rgb_to_lab kernel");
    return;
  }
  const AxisCoeffs cx = pillow_bilinear_coeffs(W, size), cy = pillow_bilinear_coeffs(H, size);
  std::vector<int32_t> coeffs;
  const int cx_off = cuda::append_coeffs(coeffs, cx), cy_off = cuda::append_coeffs(coeffs, cy);
  std::vector<cuda::ResamplePlan> plans(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n)
    plans[n] = cuda::ResamplePlan{image.ptr<uint8_t>() + n * H * W * 3, W * 3, 0, 0, cx_off, cx.stride(), cy_off,
                                  cy.stride()};
  // One blob: plans, then the int32 coefficients.
  const size_t plan_bytes = plans.size() * sizeof(cuda::ResamplePlan);
  std::vector<unsigned char> blob(plan_bytes + coeffs.size() * sizeof(int32_t));
  std::memcpy(blob.data(), plans.data(), plan_bytes);
  std::memcpy(blob.data() + plan_bytes, coeffs.data(), coeffs.size() * sizeof(int32_t));
  cuda::DeviceTable table(blob.data(), blob.size(), stream);
  const auto* dplans = table.get<cuda::ResamplePlan>();
  const auto* dcoeffs = reinterpret_cast<const int32_t*>(table.get<unsigned char>() + plan_bytes);
  rgb_to_lab_resample_kernel<<<grid, kThreads, 0, stream>>>(dplans, dcoeffs, lut, out.ptr<float>(),
                                                            static_cast<int>(size));
  cuda::check_launch("rgb_to_lab kernel");
}

void rgb_to_lab_f32_cuda(const TensorView& rgb, const TensorView& out, std::uintptr_t stream_handle) {
  const char* op = "rgb_to_lab";
  check_rgb_to_lab_f32(rgb, out, Device::kCUDA);
  check_int32_indexable(rgb, op, "rgb");
  if (out.numel() == 0) return;
  const int64_t N = rgb.size(0), HW = rgb.size(2) * rgb.size(3);
  cuda::check_grid(cuda::grid_1d(HW, kThreads), N, 1, op);
  cuda::DeviceGuard guard(rgb.device_id);
  const dim3 grid(cuda::grid_1d(HW, kThreads), static_cast<unsigned>(N));
  rgb_to_lab_f32_kernel<<<grid, kThreads, 0, cuda::as_stream(stream_handle)>>>(rgb.ptr<float>(), out.ptr<float>(), HW);
  cuda::check_launch("rgb_to_lab kernel");
}

}  // namespace ops
}  // namespace instcolor
