// Shared types for the instcolor ops: a non-owning tensor view, argument errors and checks.
//
// Every op entry point (cpu/*.cpp, cuda/*.cu) takes TensorViews and validates them itself
// before touching memory, so it is safe to call with arbitrary (wrong) shapes/dtypes/devices:
// bad arguments raise ValueError/TypeError (via the translators in bindings.cpp), never UB.
#pragma once

#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace instcolor {

// Bad value/shape/device/box -> Python ValueError (pybind11 maps std::invalid_argument).
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Bad dtype / object kind -> Python TypeError (translator registered in bindings.cpp).
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class DType : int { kU8, kI32, kI64, kF16, kF32, kF64 };
enum class Device : int { kCPU, kCUDA };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::kU8: return "uint8";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
    case DType::kF16: return "float16";
    case DType::kF32: return "float32";
    case DType::kF64: return "float64";
  }
  return "?";
}

inline int64_t dtype_size(DType d) {
  switch (d) {
    case DType::kU8: return 1;
    case DType::kF16: return 2;
    case DType::kI32:
    case DType::kF32: return 4;
    case DType::kI64:
    case DType::kF64: return 8;
  }
  return 1;
}

// Non-owning strided view. Strides are in elements.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCPU;
  int device_id = -1;  // CUDA ordinal (-1: unknown/CPU)
  bool writable = true;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;

  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t size(int64_t i) const { return shape.at(static_cast<size_t>(i < 0 ? i + dim() : i)); }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
  bool is_contiguous() const {
    if (numel() == 0) return true;
    int64_t expect = 1;
    for (int64_t i = dim() - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

inline const char* device_name(Device d) { return d == Device::kCPU ? "cpu" : "cuda"; }

template <typename... Args>
[[noreturn]] inline void throw_value(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw ValueError(os.str());
}

template <typename... Args>
[[noreturn]] inline void throw_type(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw TypeError(os.str());
}

// ------------------------------------------------------------------ checks (op, arg named)
inline void check_dtype(const TensorView& t, DType want, const char* op, const char* name) {
  if (t.dtype != want)
    throw_type(op, ": ", name, " must be ", dtype_name(want), ", got ", dtype_name(t.dtype));
}

inline void check_float_dtype(const TensorView& t, bool allow_half, const char* op, const char* name) {
  if (!(t.dtype == DType::kF32 || (allow_half && t.dtype == DType::kF16)))
    throw_type(op, ": ", name, " must be float32", allow_half ? " or float16" : "", ", got ", dtype_name(t.dtype));
}

inline void check_dim(const TensorView& t, int64_t ndim, const char* op, const char* name, const char* layout) {
  if (t.dim() != ndim) throw_value(op, ": ", name, " must have shape ", layout, ", got ", shape_str(t.shape));
}

inline void check_contiguous(const TensorView& t, const char* op, const char* name) {
  if (!t.is_contiguous()) throw_value(op, ": ", name, " must be C-contiguous (shape ", shape_str(t.shape), ")");
}

inline void check_writable(const TensorView& t, const char* op, const char* name) {
  if (!t.writable) throw_value(op, ": ", name, " is read-only");
}

inline void check_nonnull(const TensorView& t, const char* op, const char* name) {
  if (t.numel() > 0 && t.data == nullptr) throw_value(op, ": ", name, " has a null data pointer");
}

// Exact shape check; -1 in `want` matches any extent.
inline void check_shape(const TensorView& t, const std::vector<int64_t>& want, const char* op, const char* name) {
  bool ok = t.dim() == static_cast<int64_t>(want.size());
  for (size_t i = 0; ok && i < want.size(); ++i) ok = want[i] < 0 || want[i] == t.shape[i];
  if (!ok) {
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < want.size(); ++i) {
      os << (i ? ", " : "");
      if (want[i] < 0) os << "*"; else os << want[i];
    }
    os << (want.size() == 1 ? ",)" : ")");
    throw_value(op, ": ", name, " must have shape ", os.str(), ", got ", shape_str(t.shape));
  }
}

// All views on `dev` (and the same CUDA ordinal).
inline void check_same_device(const TensorView& ref, const char* ref_name, const TensorView& t, const char* op,
                              const char* name) {
  if (t.device != ref.device || (ref.device == Device::kCUDA && t.numel() > 0 && ref.numel() > 0 &&
                                  t.device_id >= 0 && ref.device_id >= 0 && t.device_id != ref.device_id)) {
    throw_value(op, ": ", name, " is on ", device_name(t.device), t.device == Device::kCUDA ? ":" : "",
                t.device == Device::kCUDA ? std::to_string(t.device_id) : std::string(), " but ", ref_name, " is on ",
                device_name(ref.device), ref.device == Device::kCUDA ? ":" : "",
                ref.device == Device::kCUDA ? std::to_string(ref.device_id) : std::string());
  }
}

inline void check_tensor(const TensorView& t, const char* op, const char* name) {
  check_nonnull(t, op, name);
  check_contiguous(t, op, name);
}

inline void check_output(const TensorView& t, const char* op, const char* name) {
  check_tensor(t, op, name);
  check_writable(t, op, name);
}

// Upper bound for 32-bit indexing inside kernels.
constexpr int64_t kMaxElements32 = (int64_t(1) << 31) - 1;

inline void check_int32_indexable(const TensorView& t, const char* op, const char* name) {
  if (t.numel() > kMaxElements32) throw_value(op, ": ", name, " is too large (", t.numel(), " elements, max 2^31-1)");
}

}  // namespace instcolor
