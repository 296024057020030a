// CUDA fuse_instances (contract: ops/fuse_instances.h).
//
// One thread per output pixel and channel chunk: the thread finds the instances of its image that
// cover the pixel, samples their logits (bilinear, align_corners=False), forms the softmax weights
// once, then walks its channels, sampling the instance features on the fly. Reads/writes of the
// (B, C, H, W) maps are coalesced along the pixel index. Nothing of size M x C x H x W exists.
// float32 and float16 storage (float32 math). One launch per call; caller's stream.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/color_math.h"
#include "ops/cuda/cuda_utils.cuh"
#include "ops/fuse_instances.h"

namespace instcolor {
namespace ops {
namespace {

constexpr int kThreads = 256;
constexpr int kMinChannelsPerThread = 8;

// Device table: img_start[B + 1], order[M], box[4 M] (left, top, width, height), scale[2 M] (float bits).
template <typename T>
__global__ void __launch_bounds__(kThreads, 3)  // 80 registers, no spills (sm_87/sm_90)
fuse_instances_kernel(const T* __restrict__ F, const T* __restrict__ BL, const T* __restrict__ IF,
                      const T* __restrict__ IL, T* __restrict__ O, const int32_t* __restrict__ meta, int B, int C,
                      int H, int W, int h, int w, int M, int c_chunk) {
  const int HW = H * W;
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= HW) return;
  const int b = blockIdx.y;
  const int c_begin = blockIdx.z * c_chunk;
  const int c_end = min(C, c_begin + c_chunk);
  const int32_t* img_start = meta;
  const int32_t* order = meta + B + 1;
  const int32_t* box = order + M;
  const float* scale = reinterpret_cast<const float*>(box + 4 * M);
  const int s = __ldg(img_start + b), n = __ldg(img_start + b + 1) - s;
  const int64_t fbase = static_cast<int64_t>(b) * C * HW + p;
  if (n == 0) {
    for (int c = c_begin; c < c_end; ++c) O[fbase + static_cast<int64_t>(c) * HW] = F[fbase + static_cast<int64_t>(c) * HW];
    return;
  }
  const int y = p / W, x = p - y * W;
  const int hw = h * w;

  // Per instance slot j (index order): off = element offset of the top-left tap in inst_feat's
  // channel 0 (-1: the box does not cover this pixel), step = dx | (dy << 1) (dx in {0, 1}: next
  // column, dy in {0, w}: next row), l1 weights of the second column/row (l0 = 1 - l1 exactly as
  // PyTorch computes it), softmax weight.
  int off[kMaxInstances], step[kMaxInstances];
  float lx1[kMaxInstances], ly1[kMaxInstances], wgt[kMaxInstances];
  bool in_union = false;
#pragma unroll
  for (int j = 0; j < kMaxInstances; ++j) {
    off[j] = -1;
    step[j] = 0;
    lx1[j] = ly1[j] = wgt[j] = 0.0f;
    if (j < n) {
      const int i = __ldg(order + s + j);
      const int left = __ldg(box + 4 * i), top = __ldg(box + 4 * i + 1);
      const int width = __ldg(box + 4 * i + 2), height = __ldg(box + 4 * i + 3);
      if (x >= left && x < left + width && y >= top && y < top + height) {
        const color::LinearTap tx = color::linear_tap(x - left, w, width, __ldg(scale + 2 * i));
        const color::LinearTap ty = color::linear_tap(y - top, h, height, __ldg(scale + 2 * i + 1));
        in_union = true;
        const int base = ty.i0 * w + tx.i0, dx = tx.i1 - tx.i0, dy = (ty.i1 - ty.i0) * w;
        off[j] = i * C * hw + base;
        step[j] = dx | (dy << 1);
        lx1[j] = tx.l1;
        ly1[j] = ty.l1;
        const T* q = IL + i * hw + base;
        // Instance logit at this pixel (kept in wgt until the softmax).
        wgt[j] = ty.l0 * (tx.l0 * cuda::ld(q) + tx.l1 * cuda::ld(q + dx)) +
                 ty.l1 * (tx.l0 * cuda::ld(q + dy) + tx.l1 * cuda::ld(q + dy + dx));
      }
    }
  }
  // Softmax over [instances in index order (logit 0 where not covering)..., background].
  const float lbg = cuda::ld(BL + static_cast<int64_t>(b) * HW + p) + (in_union ? 0.0f : kBackgroundOutsideBoxes);
  float mx = lbg;
#pragma unroll
  for (int j = 0; j < kMaxInstances; ++j)
    if (j < n) mx = fmaxf(mx, wgt[j]);
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxInstances; ++j) {
    if (j < n) {
      wgt[j] = expf(wgt[j] - mx);
      sum += wgt[j];
    }
  }
  const float ebg = expf(lbg - mx);
  sum += ebg;
#pragma unroll
  for (int j = 0; j < kMaxInstances; ++j) wgt[j] = off[j] >= 0 ? wgt[j] / sum : 0.0f;
  const float wbg = ebg / sum;

  for (int c = c_begin; c < c_end; ++c) {
    const int cc = c * hw;
    float acc = 0.0f;
#pragma unroll
    for (int j = 0; j < kMaxInstances; ++j) {
      if (off[j] >= 0) {
        const T* q = IF + (off[j] + cc);
        const int dx = step[j] & 1, dy = step[j] >> 1;
        const float l1x = lx1[j], l0x = 1.0f - l1x, l1y = ly1[j], l0y = 1.0f - l1y;
        const float v = l0y * (l0x * cuda::ld(q) + l1x * cuda::ld(q + dx)) +
                        l1y * (l0x * cuda::ld(q + dy) + l1x * cuda::ld(q + dy + dx));
        acc += wgt[j] * v;
      }
    }
    acc += wbg * cuda::ld(F + fbase + static_cast<int64_t>(c) * HW);
    cuda::st(O + fbase + static_cast<int64_t>(c) * HW, acc);
  }
}

template <typename T>
void launch(const FusePlan& p, const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
            const TensorView& inst_logit, const TensorView& out, const int32_t* meta, dim3 grid, int c_chunk,
            cudaStream_t stream) {
  fuse_instances_kernel<T><<<grid, kThreads, 0, stream>>>(
      bg_feat.ptr<T>(), bg_logit.ptr<T>(), inst_feat.ptr<T>(), inst_logit.ptr<T>(), out.ptr<T>(), meta,
      static_cast<int>(p.B), static_cast<int>(p.C), static_cast<int>(p.H), static_cast<int>(p.W),
      static_cast<int>(p.h), static_cast<int>(p.w), static_cast<int>(p.M), c_chunk);
}

}  // namespace

void fuse_instances_cuda(const TensorView& bg_feat, const TensorView& bg_logit, const TensorView& inst_feat,
                         const TensorView& inst_logit, const TensorView& box_info, const TensorView& inst_image,
                         const TensorView& out, std::uintptr_t stream_handle) {
  const char* op = "fuse_instances";
  const FusePlan p =
      check_fuse_instances(bg_feat, bg_logit, inst_feat, inst_logit, box_info, inst_image, out, Device::kCUDA);
  if (out.numel() == 0) return;
  cuda::DeviceGuard guard(bg_feat.device_id);
  const cudaStream_t stream = cuda::as_stream(stream_handle);
  if (p.M == 0) {  // no instance anywhere: out = bg_feat, no kernel
    if (out.data != bg_feat.data)
      cuda::check(cudaMemcpyAsync(out.data, bg_feat.data, static_cast<size_t>(out.numel()) * dtype_size(out.dtype),
                                  cudaMemcpyDeviceToDevice, stream),
                  "cudaMemcpyAsync");
    return;
  }
  const int64_t HW = p.H * p.W;
  const int64_t blocks_xy = static_cast<int64_t>(cuda::grid_1d(HW, kThreads)) * p.B;
  const int64_t target = static_cast<int64_t>(cuda::sm_count(cuda::current_device())) * 8;
  int64_t chunks = std::max<int64_t>(1, (target + blocks_xy - 1) / blocks_xy);
  chunks = std::min<int64_t>(chunks, std::max<int64_t>(1, p.C / kMinChannelsPerThread));
  const int64_t c_chunk = (p.C + chunks - 1) / chunks;
  chunks = (p.C + c_chunk - 1) / c_chunk;
  cuda::check_grid(cuda::grid_1d(HW, kThreads), p.B, chunks, op);

  std::vector<int32_t> meta;
  meta.reserve(p.img_start.size() + p.order.size() + p.box.size() + p.scale.size());
  meta.insert(meta.end(), p.img_start.begin(), p.img_start.end());
  meta.insert(meta.end(), p.order.begin(), p.order.end());
  meta.insert(meta.end(), p.box.begin(), p.box.end());
  for (float f : p.scale) {
    int32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    meta.push_back(bits);
  }
  cuda::DeviceTable table(meta.data(), meta.size() * sizeof(int32_t), stream);
  const dim3 grid(cuda::grid_1d(HW, kThreads), static_cast<unsigned>(p.B), static_cast<unsigned>(chunks));
  if (bg_feat.dtype == DType::kF16)
    launch<__half>(p, bg_feat, bg_logit, inst_feat, inst_logit, out, table.get<int32_t>(), grid,
                   static_cast<int>(c_chunk), stream);
  else
    launch<float>(p, bg_feat, bg_logit, inst_feat, inst_logit, out, table.get<int32_t>(), grid,
                  static_cast<int>(c_chunk), stream);
  cuda::check_launch("fuse_instances kernel");
}

}  // namespace ops
}  // namespace instcolor
