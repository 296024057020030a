// Python object -> TensorView: numpy / buffer protocol (host), __cuda_array_interface__ (device),
// DLPack __dlpack__ (host or device). Views borrow memory; `Keep` holds what must stay alive.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "ops/common.h"

namespace instcolor {
namespace interop {

struct Keep {
  std::vector<pybind11::object> objects;
  std::vector<std::unique_ptr<pybind11::buffer_info>> buffers;
};

// `stream`: the consumer stream handed to __dlpack__ (0 = legacy default stream).
TensorView to_view(pybind11::handle obj, const char* name, Keep& keep, std::uintptr_t stream = 0);

// A list/tuple of arrays.
std::vector<TensorView> to_views(pybind11::handle seq, const char* name, Keep& keep, std::uintptr_t stream = 0);

}  // namespace interop
}  // namespace instcolor
