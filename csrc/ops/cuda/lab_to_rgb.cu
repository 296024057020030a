// CUDA lab_to_rgb (contract: ops/lab_to_rgb.h).
#include "ops/color_math.h"
#include "ops/cuda/cuda_utils.cuh"
#include "ops/lab_to_rgb.h"

namespace instcolor {
namespace ops {
namespace {

constexpr int kThreads = 256;

__global__ void lab_to_rgb_kernel(const float* __restrict__ lab, float* __restrict__ out, int64_t HW) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= HW) return;
  const int64_t base = static_cast<int64_t>(blockIdx.y) * 3 * HW + p;
  float r, g, b;
  color::norm_lab_to_rgb(lab[base], lab[base + HW], lab[base + 2 * HW], r, g, b);
  out[base] = r;
  out[base + HW] = g;
  out[base + 2 * HW] = b;
}

}  // namespace

void lab_to_rgb_cuda(const TensorView& lab, const TensorView& out, std::uintptr_t stream_handle) {
  const char* op = "lab_to_rgb";
  check_lab_to_rgb(lab, out, Device::kCUDA);
  check_int32_indexable(lab, op, "lab");
  if (out.numel() == 0) return;
  const int64_t N = lab.size(0), HW = lab.size(2) * lab.size(3);
  cuda::check_grid(cuda::grid_1d(HW, kThreads), N, 1, op);
  cuda::DeviceGuard guard(lab.device_id);
  const dim3 grid(cuda::grid_1d(HW, kThreads), static_cast<unsigned>(N));
  lab_to_rgb_kernel<<<grid, kThreads, 0, cuda::as_stream(stream_handle)>>>(lab.ptr<float>(), out.ptr<float>(), HW);
  cuda::check_launch("lab_to_rgb kernel");
}

}  // namespace ops
}  // namespace instcolor
