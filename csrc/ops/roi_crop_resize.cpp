// Shared (device independent) validation of roi_crop_resize.
#include "ops/roi_crop_resize.h"

#include <cmath>

namespace instcolor {
namespace ops {

std::vector<CropBox> check_roi_crop_resize(const std::vector<TensorView>& images, const TensorView& boxes,
                                           const TensorView& box_image, int64_t size, const TensorView& out,
                                           Device dev) {
  const char* op = "roi_crop_resize";
  if (size < 1 || size > (int64_t(1) << 16)) throw_value(op, ": size must be in 1..65536, got ", size);
  check_dtype(boxes, DType::kF64, op, "boxes");
  check_shape(boxes, {-1, 4}, op, "boxes");
  check_tensor(boxes, op, "boxes");
  if (boxes.device != Device::kCPU) throw_value(op, ": boxes must be a host (CPU) array");
  const int64_t M = boxes.size(0);
  check_dtype(box_image, DType::kI64, op, "box_image");
  check_shape(box_image, {M}, op, "box_image");
  check_tensor(box_image, op, "box_image");
  if (box_image.device != Device::kCPU) throw_value(op, ": box_image must be a host (CPU) array");
  if (images.empty() && M > 0) throw_value(op, ": no images given for ", M, " boxes");
  for (size_t k = 0; k < images.size(); ++k) {
    const TensorView& im = images[k];
    const std::string name = "image[" + std::to_string(k) + "]";
    check_dtype(im, DType::kU8, op, name.c_str());
    check_shape(im, {-1, -1, 3}, op, name.c_str());
    check_tensor(im, op, name.c_str());
    if (im.size(0) < 1 || im.size(1) < 1) throw_value(op, ": ", name, " is empty, shape ", shape_str(im.shape));
    if (im.device != dev) throw_value(op, ": ", name, " is on ", device_name(im.device), ", expected ", device_name(dev));
    check_same_device(images[0], "image[0]", im, op, name.c_str());
    if (dev == Device::kCUDA) check_int32_indexable(im, op, name.c_str());
  }
  check_dtype(out, DType::kF32, op, "out");
  check_shape(out, {M, 1, size, size}, op, "out");
  check_output(out, op, "out");
  if (out.device != dev) throw_value(op, ": out is on ", device_name(out.device), ", expected ", device_name(dev));
  if (!images.empty()) check_same_device(images[0], "image[0]", out, op, "out");

  std::vector<CropBox> result(static_cast<size_t>(M));
  const double* b = boxes.ptr<double>();
  const int64_t* bi = box_image.ptr<int64_t>();
  for (int64_t i = 0; i < M; ++i) {
    const double* c = b + 4 * i;
    if (!(std::isfinite(c[0]) && std::isfinite(c[1]) && std::isfinite(c[2]) && std::isfinite(c[3])))
      throw_value(op, ": boxes[", i, "] = (", c[0], ", ", c[1], ", ", c[2], ", ", c[3],
                  ") has a NaN or infinite coordinate");
    const int64_t k = bi[i];
    if (k < 0 || k >= static_cast<int64_t>(images.size()))
      throw_value(op, ": box_image[", i, "] = ", k, " is not a valid image index (", images.size(), " images)");
    const double x0 = std::trunc(c[0]), y0 = std::trunc(c[1]), x1 = std::trunc(c[2]), y1 = std::trunc(c[3]);
    if (x1 <= x0 || y1 <= y0)
      throw_value(op, ": boxes[", i, "] = (", c[0], ", ", c[1], ", ", c[2], ", ", c[3],
                  ") has zero or negative area after int truncation (", x0, ", ", y0, ", ", x1, ", ", y1, ")");
    const double H = static_cast<double>(images[k].size(0)), W = static_cast<double>(images[k].size(1));
    if (x0 < 0 || y0 < 0 || x1 > W || y1 > H)
      throw_value(op, ": boxes[", i, "] = (", x0, ", ", y0, ", ", x1, ", ", y1, ") (truncated) lies outside the ",
                  static_cast<int64_t>(W), "x", static_cast<int64_t>(H), " image ", k);
    result[i] = CropBox{static_cast<int64_t>(x0), static_cast<int64_t>(y0), static_cast<int64_t>(x1),
                        static_cast<int64_t>(y1), k};
  }
  return result;
}

}  // namespace ops
}  // namespace instcolor
