// CPU lab_to_rgb (contract: ops/lab_to_rgb.h).
#include "ops/lab_to_rgb.h"

#include "ops/color_math.h"
#include "ops/cpu/planar_pixels.h"

namespace instcolor {
namespace ops {

void lab_to_rgb_cpu(const TensorView& lab, const TensorView& out) {
  check_lab_to_rgb(lab, out, Device::kCPU);
  if (out.numel() == 0) return;
  cpu::for_each_planar_pixel(lab.ptr<float>(), out.ptr<float>(), lab.size(0), lab.size(2) * lab.size(3),
                             [](float L, float a, float b, float& r, float& g, float& bl) {
                               color::norm_lab_to_rgb(L, a, b, r, g, bl);
                             });
}

}  // namespace ops
}  // namespace instcolor
