// CPU lab_to_rgb (contract: ops/lab_to_rgb.h).
#include "ops/lab_to_rgb.h"

#include "ops/color_math.h"

namespace instcolor {
namespace ops {

void lab_to_rgb_cpu(const TensorView& lab, const TensorView& out) {
  check_lab_to_rgb(lab, out, Device::kCPU);
  if (out.numel() == 0) return;
  const int64_t N = lab.size(0), HW = lab.size(2) * lab.size(3);
  const float* src = lab.ptr<float>();
  float* dst = out.ptr<float>();
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (HW + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t job = 0; job < N * chunks; ++job) {
    const int64_t n = job / chunks, p0 = (job % chunks) * kChunk;
    const int64_t p1 = p0 + kChunk < HW ? p0 + kChunk : HW;
    const float* l = src + n * 3 * HW;
    float* o = dst + n * 3 * HW;
    for (int64_t p = p0; p < p1; ++p)
      color::norm_lab_to_rgb(l[p], l[HW + p], l[2 * HW + p], o[p], o[HW + p], o[2 * HW + p]);
  }
}

}  // namespace ops
}  // namespace instcolor
