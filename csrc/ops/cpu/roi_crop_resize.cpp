// CPU roi_crop_resize (contract: ops/roi_crop_resize.h).
#include "ops/roi_crop_resize.h"

#include <map>

#include "ops/color_math.h"
#include "ops/cpu/resample_u8.h"
#include "ops/pillow_resample.h"

namespace instcolor {
namespace ops {

void roi_crop_resize_cpu(const std::vector<TensorView>& images, const TensorView& boxes, const TensorView& box_image,
                         int64_t size, const TensorView& out) {
  const std::vector<CropBox> crops = check_roi_crop_resize(images, boxes, box_image, size, out, Device::kCPU);
  if (crops.empty()) return;
  const color::LinearLut& lut = color::linear_lut();
  std::map<int64_t, AxisCoeffs> cache;  // in_size -> coefficients to `size`
  auto coeffs = [&](int64_t n) -> const AxisCoeffs& {
    auto it = cache.find(n);
    if (it == cache.end()) it = cache.emplace(n, pillow_bilinear_coeffs(n, size)).first;
    return it->second;
  };
  float* dst = out.ptr<float>();
  const int64_t SS = size * size;
  for (size_t m = 0; m < crops.size(); ++m) {
    const CropBox& c = crops[m];
    const TensorView& im = images[c.image];
    const AxisCoeffs& cx = coeffs(c.x1 - c.x0);
    const AxisCoeffs& cy = coeffs(c.y1 - c.y0);
    float* base = dst + static_cast<int64_t>(m) * SS;
    cpu::resample_crop_rgb(im.ptr<uint8_t>(), im.size(1) * 3, c.x0, c.y0, cx, cy, [&](int oy, const uint8_t* row) {
      float* o = base + oy * size;
      for (int64_t x = 0; x < size; ++x)
        o[x] = color::linear_to_norm_L(lut.v[row[3 * x]], lut.v[row[3 * x + 1]], lut.v[row[3 * x + 2]]);
    });
  }
}

}  // namespace ops
}  // namespace instcolor
