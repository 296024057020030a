// Helpers shared by the CUDA ops: error checks, device guard, stream-ordered table upload.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ops/common.h"

namespace instcolor {
namespace cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

inline cudaStream_t as_stream(std::uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Makes `device` current for the scope (the caller's stream must belong to it).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (device >= 0 && device != prev_) {
      check(cudaSetDevice(device), "cudaSetDevice");
      restore_ = true;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool restore_ = false;
};

// Writes `bytes` (a multiple of 4) of host memory to device memory `dst` on `stream` WITHOUT a
// host-to-device copy: the data travel as the by-value parameter of a tiny copy kernel (chunks of
// up to ~32 KB, the CUDA 12.1+ parameter limit; one launch for the tables of a typical call).
// The driver copies kernel parameters when the launch is enqueued, so the call never waits for
// the stream (a pageable cudaMemcpyAsync does), the host buffer may be freed as soon as it returns,
// and under CUDA-graph capture the values are baked into the captured kernel node (a captured
// memcpy would re-read the since-freed host buffer at every replay). Defined in device.cu.
void upload_by_params(void* dst, const void* host, size_t bytes, cudaStream_t stream);

// Device copy of a small host table (resampling coefficients, crop plans, fusion boxes), allocated
// and freed in stream order (cudaMallocAsync / cudaFreeAsync, both capturable; falls back to
// cudaMalloc + a stream synchronisation at release where memory pools are unsupported) and filled
// by upload_by_params. `host` may be released as soon as the constructor returns.
class DeviceTable {
 public:
  DeviceTable(const void* host, size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes == 0) return;
    if (bytes % 4 != 0) throw std::logic_error("DeviceTable: size must be a multiple of 4 bytes");
    cudaError_t e = cudaMallocAsync(&ptr_, bytes, stream_);
    if (e == cudaErrorNotSupported) {
      cudaGetLastError();
      check(cudaMalloc(&ptr_, bytes), "cudaMalloc");
      async_ = false;
    } else {
      check(e, "cudaMallocAsync");
    }
    try {
      upload_by_params(ptr_, host, bytes, stream_);
    } catch (...) {
      release();
      throw;
    }
  }
  ~DeviceTable() { release(); }
  DeviceTable(const DeviceTable&) = delete;
  DeviceTable& operator=(const DeviceTable&) = delete;
  template <typename T>
  const T* get() const { return static_cast<const T*>(ptr_); }

 private:
  void release() noexcept {
    if (!ptr_) return;
    if (async_) {
      cudaFreeAsync(ptr_, stream_);
    } else {
      cudaStreamSynchronize(stream_);
      cudaFree(ptr_);
    }
    ptr_ = nullptr;
  }
  void* ptr_ = nullptr;
  cudaStream_t stream_;
  bool async_ = true;
};

inline void check_launch(const char* op) { check(cudaGetLastError(), op); }

inline int sm_count(int device) {
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || n <= 0) {
    cudaGetLastError();
    n = 16;
  }
  return n;
}

inline int current_device() {
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

inline unsigned grid_1d(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

inline void check_grid(int64_t x, int64_t y, int64_t z, const char* op) {
  if (x > 2147483647LL || y > 65535 || z > 65535) throw_value(op, ": problem too large for one launch");
}

template <typename T>
__device__ __forceinline__ float ld(const T* p);
template <>
__device__ __forceinline__ float ld<float>(const float* p) { return __ldg(p); }
template <>
__device__ __forceinline__ float ld<__half>(const __half* p) { return __half2float(__ldg(p)); }

__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__half* p, float v) { *p = __float2half_rn(v); }

}  // namespace cuda
}  // namespace instcolor
