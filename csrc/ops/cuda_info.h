// CUDA runtime queries usable from plain C++ (implemented in cuda/device.cu when compiled in).
#pragma once

#include <string>

namespace instcolor {
namespace cuda {

#ifdef INSTCOLOR_WITH_CUDA
// Number of usable devices; 0 when cudaGetDeviceCount fails (no driver, no GPU). Never throws.
int device_count() noexcept;
// Text of the error cudaGetDeviceCount returned ("" when it succeeded).
std::string device_count_error();
// CUDA ordinal owning a device/managed pointer, or -1 (host memory, invalid pointer, no GPU).
int pointer_device(const void* ptr) noexcept;
#endif

}  // namespace cuda
}  // namespace instcolor
