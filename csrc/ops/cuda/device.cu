// CUDA runtime queries (ops/cuda_info.h) and the parameter-borne table upload (cuda_utils.cuh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "ops/cuda/cuda_utils.cuh"
#include "ops/cuda_info.h"

namespace instcolor {
namespace cuda {

int device_count() noexcept {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string device_count_error() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  }
  return n > 0 ? std::string() : std::string("no CUDA device");
}

int pointer_device(const void* ptr) noexcept {
  cudaPointerAttributes a{};
  const cudaError_t e = cudaPointerGetAttributes(&a, ptr);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) return a.device;
  return -1;
}

namespace {

// Kernel parameters may total 32764 bytes since CUDA 12.1 (Volta and newer; this build targets
// sm_75+), 4096 before.
#if CUDART_VERSION >= 12010
constexpr int kChunkWords = 8000;
#else
constexpr int kChunkWords = 1000;
#endif

struct ParamChunk {
  uint32_t w[kChunkWords];
};

// __grid_constant__: the kernel reads the parameter in place (indexing a by-value parameter would
// otherwise make every thread copy it to local memory first).
__global__ void param_copy_kernel(const __grid_constant__ ParamChunk chunk, uint32_t* __restrict__ dst, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) dst[i] = chunk.w[i];
}

}  // namespace

void upload_by_params(void* dst, const void* host, size_t bytes, cudaStream_t stream) {
  if (bytes % 4 != 0) throw std::logic_error("upload_by_params: size must be a multiple of 4 bytes");
  const size_t words = bytes / 4;
  const auto* src = static_cast<const unsigned char*>(host);
  auto chunk = std::make_unique<ParamChunk>();  // zeroed: no uninitialised bytes in the launch
  constexpr int kThreads = 256;
  for (size_t off = 0; off < words; off += kChunkWords) {
    const int n = static_cast<int>(std::min<size_t>(kChunkWords, words - off));
    std::memcpy(chunk->w, src + off * 4, static_cast<size_t>(n) * 4);
    param_copy_kernel<<<(n + kThreads - 1) / kThreads, kThreads, 0, stream>>>(*chunk,
                                                                              static_cast<uint32_t*>(dst) + off, n);
    check_launch("table upload kernel");
  }
}

}  // namespace cuda
}  // namespace instcolor
