// CUDA roi_crop_resize (contract: ops/roi_crop_resize.h). Boxes are validated and the Pillow
// coefficient tables built on the host; one stream-ordered upload, one launch for all boxes.
#include <cstring>
#include <map>
#include <vector>

#include "ops/color_math.h"
#include "ops/cuda/cuda_utils.cuh"
#include "ops/cuda/resample_u8.cuh"
#include "ops/roi_crop_resize.h"

namespace instcolor {
namespace ops {
namespace {

constexpr int kThreads = 256;

// grid (S*S / 256, M): one thread per output pixel of box blockIdx.y.
__global__ void roi_crop_resize_kernel(const cuda::ResamplePlan* __restrict__ plans, const int32_t* __restrict__ coeffs,
                                       color::LinearLut lut, float* __restrict__ out, int S) {
  __shared__ float slut[256];
  cuda::load_lut(lut, slut);
  const int64_t SS = static_cast<int64_t>(S) * S;
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= SS) return;
  const int m = blockIdx.y;
  const int oy = static_cast<int>(p / S), ox = static_cast<int>(p - static_cast<int64_t>(oy) * S);
  int r, g, b;
  cuda::resample_pixel(plans[m], coeffs, ox, oy, r, g, b);
  out[static_cast<int64_t>(m) * SS + p] = color::linear_to_norm_L(slut[r], slut[g], slut[b]);
}

}  // namespace

void roi_crop_resize_cuda(const std::vector<TensorView>& images, const TensorView& boxes,
                          const TensorView& box_image, int64_t size, const TensorView& out,
                          std::uintptr_t stream_handle) {
  const char* op = "roi_crop_resize";
  const std::vector<CropBox> crops = check_roi_crop_resize(images, boxes, box_image, size, out, Device::kCUDA);
  check_int32_indexable(out, op, "out");
  if (crops.empty()) return;  // M == 0: no launch
  const int64_t M = static_cast<int64_t>(crops.size());
  cuda::check_grid(cuda::grid_1d(size * size, kThreads), M, 1, op);
  cuda::DeviceGuard guard(images[0].device_id);
  const cudaStream_t stream = cuda::as_stream(stream_handle);

  std::vector<int32_t> coeffs;
  std::map<int64_t, std::pair<int, int>> cache;  // crop extent -> (offset, stride)
  auto coeff = [&](int64_t n) {
    auto it = cache.find(n);
    if (it == cache.end()) {
      const AxisCoeffs c = pillow_bilinear_coeffs(n, size);
      it = cache.emplace(n, std::make_pair(cuda::append_coeffs(coeffs, c), c.stride())).first;
    }
    return it->second;
  };
  std::vector<cuda::ResamplePlan> plans(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    const CropBox& c = crops[m];
    const TensorView& im = images[c.image];
    const auto cx = coeff(c.x1 - c.x0), cy = coeff(c.y1 - c.y0);
    plans[m] = cuda::ResamplePlan{im.ptr<uint8_t>(), im.size(1) * 3, static_cast<int>(c.x0), static_cast<int>(c.y0),
                                  cx.first, cx.second, cy.first, cy.second};
  }
  const size_t plan_bytes = plans.size() * sizeof(cuda::ResamplePlan);
  std::vector<unsigned char> blob(plan_bytes + coeffs.size() * sizeof(int32_t));
  std::memcpy(blob.data(), plans.data(), plan_bytes);
  std::memcpy(blob.data() + plan_bytes, coeffs.data(), coeffs.size() * sizeof(int32_t));
  cuda::DeviceTable table(blob.data(), blob.size(), stream);
  const auto* dplans = table.get<cuda::ResamplePlan>();
  const auto* dcoeffs = reinterpret_cast<const int32_t*>(table.get<unsigned char>() + plan_bytes);
  const dim3 grid(cuda::grid_1d(size * size, kThreads), static_cast<unsigned>(M));
  roi_crop_resize_kernel<<<grid, kThreads, 0, stream>>>(dplans, dcoeffs, color::linear_lut(), out.ptr<float>(),
                                                        static_cast<int>(size));
  cuda::check_launch("roi_crop_resize kernel");
}

}  // namespace ops
}  // namespace instcolor
