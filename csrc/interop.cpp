#include "interop.h"

#include <string>

#include "ops/cuda_info.h"

namespace py = pybind11;

namespace instcolor {
namespace interop {
namespace {

// Minimal DLPack (v0.x, unversioned "dltensor" capsule) ABI.
struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13;

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

[[noreturn]] void unsupported(py::handle obj, const char* name) {
  throw_type(name, ": expected a numpy array, torch tensor, cupy array or another object with the buffer protocol, "
                   "__cuda_array_interface__ or __dlpack__, got ",
             type_name(obj));
}

DType dtype_from_kind(char kind, int64_t itemsize, const char* name, const std::string& what) {
  if (kind == 'u' && itemsize == 1) return DType::kU8;
  if (kind == 'i' && itemsize == 4) return DType::kI32;
  if (kind == 'i' && itemsize == 8) return DType::kI64;
  if (kind == 'f' && itemsize == 2) return DType::kF16;
  if (kind == 'f' && itemsize == 4) return DType::kF32;
  if (kind == 'f' && itemsize == 8) return DType::kF64;
  throw_type(name, ": unsupported dtype ", what);
}

void set_strides_from_bytes(TensorView& v, const std::vector<int64_t>& byte_strides, const char* name) {
  const int64_t item = dtype_size(v.dtype);
  v.strides.resize(v.shape.size());
  for (size_t i = 0; i < v.shape.size(); ++i) {
    if (byte_strides[i] % item != 0) throw_value(name, ": strides are not a multiple of the item size");
    v.strides[i] = byte_strides[i] / item;
  }
}

void set_contiguous_strides(TensorView& v) {
  v.strides.resize(v.shape.size());
  int64_t s = 1;
  for (int64_t i = v.dim() - 1; i >= 0; --i) {
    v.strides[i] = s;
    s *= v.shape[i];
  }
}

// Extents from a foreign producer: non-negative, and the product of the non-zero extents (in
// bytes) must fit int64, so that numel(), contiguous strides and every offset derived from them
// are defined -- even for an empty array, whose strides are still computed.
void check_extents(const TensorView& v, const char* name) {
  constexpr int64_t kMaxBytes = int64_t(1) << 62;
  int64_t n = dtype_size(v.dtype);
  for (int64_t s : v.shape) {
    if (s < 0) throw_value(name, ": negative extent in shape ", shape_str(v.shape));
    if (s == 0) continue;
    if (n > kMaxBytes / s) throw_value(name, ": shape ", shape_str(v.shape), " is too large");
    n *= s;
  }
}

TensorView from_buffer(py::handle obj, const char* name, Keep& keep) {
  std::unique_ptr<py::buffer_info> info;
  try {
    info = std::make_unique<py::buffer_info>(py::reinterpret_borrow<py::buffer>(obj).request(false));
  } catch (py::error_already_set& e) {
    throw_type(name, ": the buffer protocol export failed: ", e.what());
  }
  std::string fmt = info->format;
  size_t pos = 0;
  while (pos < fmt.size() && (fmt[pos] == '@' || fmt[pos] == '=' || fmt[pos] == '<' || fmt[pos] == '|')) ++pos;
  if (pos < fmt.size() && (fmt[pos] == '>' || fmt[pos] == '!')) throw_type(name, ": big-endian arrays are not supported");
  const std::string f = fmt.substr(pos);
  char kind = '?';
  if (f == "B") kind = 'u';
  else if (f == "i" || f == "l" || f == "q") kind = 'i';
  else if (f == "e" || f == "f" || f == "d") kind = 'f';
  TensorView v;
  v.dtype = dtype_from_kind(kind, info->itemsize, name, "'" + fmt + "' (itemsize " + std::to_string(info->itemsize) + ")");
  v.data = info->ptr;
  v.device = Device::kCPU;
  v.writable = !info->readonly;
  v.shape.assign(info->shape.begin(), info->shape.end());
  set_strides_from_bytes(v, std::vector<int64_t>(info->strides.begin(), info->strides.end()), name);
  check_extents(v, name);
  keep.objects.push_back(py::reinterpret_borrow<py::object>(obj));
  keep.buffers.push_back(std::move(info));
  return v;
}

TensorView from_cai_unchecked(py::handle obj, const char* name, Keep& keep) {
  py::dict cai = obj.attr("__cuda_array_interface__");
  TensorView v;
  v.device = Device::kCUDA;
  for (auto s : py::tuple(cai["shape"])) v.shape.push_back(s.cast<int64_t>());
  const std::string typestr = py::str(cai["typestr"]);
  if (typestr.size() < 3) throw_type(name, ": bad __cuda_array_interface__ typestr '", typestr, "'");
  if (typestr[0] == '>') throw_type(name, ": big-endian arrays are not supported");
  v.dtype = dtype_from_kind(typestr[1], std::stoll(typestr.substr(2)), name, "'" + typestr + "'");
  check_extents(v, name);  // before any stride arithmetic
  py::tuple data = cai["data"];
  v.data = reinterpret_cast<void*>(data[0].cast<std::uintptr_t>());
  v.writable = !data[1].cast<bool>();
  if (cai.contains("strides") && !cai["strides"].is_none()) {
    std::vector<int64_t> bs;
    for (auto s : py::tuple(cai["strides"])) bs.push_back(s.cast<int64_t>());
    if (bs.size() != v.shape.size()) throw_value(name, ": __cuda_array_interface__ strides/shape mismatch");
    set_strides_from_bytes(v, bs, name);
  } else {
    set_contiguous_strides(v);
  }
  if (cai.contains("mask") && !cai["mask"].is_none()) throw_value(name, ": masked arrays are not supported");
#ifdef INSTCOLOR_WITH_CUDA
  v.device_id = v.numel() > 0 ? cuda::pointer_device(v.data) : -1;
  if (v.numel() > 0 && v.device_id < 0)
    throw_value(name, ": __cuda_array_interface__ pointer is not CUDA device memory (or no usable GPU)");
#endif
  keep.objects.push_back(py::reinterpret_borrow<py::object>(obj));
  return v;
}

// A foreign object's interface dict may be anything: missing keys, wrong types, numbers out of
// range. Every such problem becomes one TypeError naming the argument.
TensorView from_cai(py::handle obj, const char* name, Keep& keep) {
  try {
    return from_cai_unchecked(obj, name, keep);
  } catch (const ValueError&) {
    throw;
  } catch (const TypeError&) {
    throw;
  } catch (py::error_already_set& e) {
    throw_type(name, ": malformed __cuda_array_interface__: ", e.what());
  } catch (const std::exception& e) {
    throw_type(name, ": malformed __cuda_array_interface__: ", e.what());
  }
}

TensorView from_dlpack(py::handle obj, const char* name, Keep& keep, std::uintptr_t stream) {
  int32_t dev_type = kDLCPU;
  if (py::hasattr(obj, "__dlpack_device__")) {
    py::tuple d = obj.attr("__dlpack_device__")();
    dev_type = d[0].cast<int32_t>();
  }
  py::object cap;
  if (dev_type == kDLCUDA || dev_type == kDLCUDAManaged) {
    // DLPack stream convention: 1 = legacy default stream, otherwise the cudaStream_t value.
    const std::uintptr_t s = stream == 0 ? 1 : stream;
    try {
      cap = obj.attr("__dlpack__")(py::arg("stream") = s);
    } catch (py::error_already_set&) {
      cap = obj.attr("__dlpack__")();
    }
  } else {
    cap = obj.attr("__dlpack__")();
  }
  if (!PyCapsule_IsValid(cap.ptr(), "dltensor")) throw_type(name, ": __dlpack__ did not return a 'dltensor' capsule");
  auto* mt = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  if (mt == nullptr) throw_type(name, ": invalid DLPack capsule");
  const DLTensor& t = mt->dl_tensor;
  TensorView v;
  if (t.device.device_type == kDLCPU || t.device.device_type == kDLCUDAHost) {
    v.device = Device::kCPU;
  } else if (t.device.device_type == kDLCUDA || t.device.device_type == kDLCUDAManaged) {
    v.device = Device::kCUDA;
    v.device_id = t.device.device_id;
  } else {
    throw_value(name, ": unsupported DLPack device type ", t.device.device_type);
  }
  if (t.dtype.lanes != 1) throw_type(name, ": vector DLPack dtypes are not supported");
  const char kind = t.dtype.code == 0 ? 'i' : t.dtype.code == 1 ? 'u' : t.dtype.code == 2 ? 'f' : '?';
  v.dtype = dtype_from_kind(kind, t.dtype.bits / 8, name,
                            "(DLPack code " + std::to_string(t.dtype.code) + ", bits " + std::to_string(t.dtype.bits) + ")");
  if (t.ndim < 0 || t.ndim > 16) throw_value(name, ": bad DLPack ndim ", t.ndim);
  if (t.ndim > 0 && t.shape == nullptr) throw_value(name, ": DLPack tensor without a shape");
  v.shape.assign(t.shape, t.shape + t.ndim);
  check_extents(v, name);  // before any stride arithmetic
  if (t.strides != nullptr) {
    v.strides.assign(t.strides, t.strides + t.ndim);
  } else {
    set_contiguous_strides(v);
  }
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  keep.objects.push_back(cap);  // the capsule owns the DLManagedTensor until it is collected
  keep.objects.push_back(py::reinterpret_borrow<py::object>(obj));
  return v;
}

}  // namespace

TensorView to_view(py::handle obj, const char* name, Keep& keep, std::uintptr_t stream) {
  if (obj.is_none()) throw_type(name, ": expected an array, got None");
  // The CUDA interface first: cupy >= 14 arrays also export the buffer protocol, which then fails
  // ("Accessing a CuPy ndarray on CPU is not allowed"), and a device array must never be read as host
  // memory. Host arrays (numpy, CPU torch tensors) do not expose __cuda_array_interface__.
  if (py::hasattr(obj, "__cuda_array_interface__")) return from_cai(obj, name, keep);
  if (PyObject_CheckBuffer(obj.ptr())) return from_buffer(obj, name, keep);
  if (py::hasattr(obj, "__dlpack__")) return from_dlpack(obj, name, keep, stream);
  unsupported(obj, name);
}

std::vector<TensorView> to_views(py::handle seq, const char* name, Keep& keep, std::uintptr_t stream) {
  if (!py::isinstance<py::list>(seq) && !py::isinstance<py::tuple>(seq))
    throw_type(name, ": expected a list or tuple of arrays, got ", type_name(seq));
  std::vector<TensorView> views;
  size_t k = 0;
  for (py::handle item : seq) {
    const std::string n = std::string(name) + "[" + std::to_string(k++) + "]";
    views.push_back(to_view(item, n.c_str(), keep, stream));
  }
  return views;
}

}  // namespace interop
}  // namespace instcolor
