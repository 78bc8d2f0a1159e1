// Tile intersection and sorting shared by the voxelizer and the rasterizer:
// count pairs per item -> inclusive scan -> emit (key, item) -> stable radix sort by key ->
// [start, end) range of every key.  Index products are 64-bit (up to 2^31 - 1 items).
#include "common.h"

#ifndef VBGS_EMULATION
#include <cub/cub.cuh>
#endif

namespace vbgs {

// The seam around the two CUB calls (device-wide inclusive scan, stable radix sort of key/value
// pairs by the low end_bit bits of the key): the CPU execution harness (tests/gpu_ext_harness)
// links host stand-ins instead.  Same two-phase protocol as CUB: tmp == nullptr -> bytes.
namespace seam {
cudaError_t inclusive_sum(void* tmp, size_t& bytes, const int64_t* in, int64_t* out, int n,
                          cudaStream_t stream);
cudaError_t sort_pairs(void* tmp, size_t& bytes, const uint64_t* keys_in, uint64_t* keys_out,
                       const int32_t* vals_in, int32_t* vals_out, int n, int end_bit,
                       cudaStream_t stream);
#ifndef VBGS_EMULATION
cudaError_t inclusive_sum(void* tmp, size_t& bytes, const int64_t* in, int64_t* out, int n,
                          cudaStream_t stream) {
  return cub::DeviceScan::InclusiveSum(tmp, bytes, in, out, n, stream);
}
cudaError_t sort_pairs(void* tmp, size_t& bytes, const uint64_t* keys_in, uint64_t* keys_out,
                       const int32_t* vals_in, int32_t* vals_out, int n, int end_bit,
                       cudaStream_t stream) {
  return cub::DeviceRadixSort::SortPairs(tmp, bytes, keys_in, keys_out, vals_in, vals_out, n, 0,
                                         end_bit, stream);
}
#endif
}  // namespace seam

namespace {

__device__ __forceinline__ int64_t box_count(const int* b) {
  int64_t nz = b[1] - b[0] + 1, ny = b[3] - b[2] + 1, nx = b[5] - b[4] + 1;
  if (nz <= 0 || ny <= 0 || nx <= 0) return 0;
  return nz * ny * nx;
}

__global__ void count_kernel(const int* __restrict__ boxes, int n, int64_t* __restrict__ counts) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  counts[i] = box_count(boxes + 6 * i);
}

__global__ void emit_kernel(const int* __restrict__ boxes, const int64_t* __restrict__ key_base,
                            const int64_t* __restrict__ offsets, int n, int ty, int tx,
                            uint64_t* __restrict__ keys, int32_t* __restrict__ vals) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int* b = boxes + 6 * i;
  int64_t cnt = box_count(b);
  if (cnt == 0) return;
  int64_t pos = offsets[i] - cnt;  // inclusive scan -> start of item i
  int64_t base = key_base ? key_base[i] : 0;
  for (int z = b[0]; z <= b[1]; ++z)
    for (int y = b[2]; y <= b[3]; ++y)
      for (int x = b[4]; x <= b[5]; ++x) {
        keys[pos] = static_cast<uint64_t>(base + (static_cast<int64_t>(z) * ty + y) * tx + x);
        vals[pos] = static_cast<int32_t>(i);
        ++pos;
      }
}

__global__ void ranges_kernel(const uint64_t* __restrict__ keys, int64_t total, int64_t n_keys,
                              int64_t* __restrict__ ranges) {
  int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= total) return;
  uint64_t k = keys[j];
  if (k >= static_cast<uint64_t>(n_keys)) return;  // cannot happen: boxes are clamped
  if (j == 0 || keys[j - 1] != k) ranges[2 * k] = j;
  if (j == total - 1 || keys[j + 1] != k) ranges[2 * k + 1] = j + 1;
}

int bits_for(int64_t n_keys) {
  int bits = 1;
  while (bits < 64 && (static_cast<uint64_t>(1) << bits) < static_cast<uint64_t>(n_keys)) ++bits;
  return bits;
}

}  // namespace

int64_t build_tile_lists(const int* boxes, const int64_t* key_base, int n_items, int tz, int ty,
                         int tx, int64_t n_keys, const AllocFn& alloc, cudaStream_t stream,
                         int32_t** ids, int64_t** ranges) {
  (void)tz;
  *ranges = static_cast<int64_t*>(alloc(sizeof(int64_t) * 2 * (n_keys > 0 ? n_keys : 1), 2));
  VB_CUDA_CHECK(cudaMemsetAsync(*ranges, 0, sizeof(int64_t) * 2 * n_keys, stream));
  if (n_items <= 0 || n_keys <= 0) {
    *ids = static_cast<int32_t*>(alloc(sizeof(int32_t), 1));
    return 0;
  }
  const int T = 256;
  auto* counts = static_cast<int64_t*>(alloc(sizeof(int64_t) * n_items, 0));
  auto* offsets = static_cast<int64_t*>(alloc(sizeof(int64_t) * n_items, 0));
  VB_LAUNCH(count_kernel, blocks_for(n_items, T), T, 0, stream, boxes, n_items, counts);
  VB_LAUNCH_CHECK();

  size_t tmp_bytes = 0;
  VB_CUDA_CHECK(seam::inclusive_sum(nullptr, tmp_bytes, counts, offsets, n_items, stream));
  void* tmp = alloc(tmp_bytes > 0 ? tmp_bytes : 1, 0);
  VB_CUDA_CHECK(seam::inclusive_sum(tmp, tmp_bytes, counts, offsets, n_items, stream));

  int64_t total = 0;
  VB_CUDA_CHECK(cudaMemcpyAsync(&total, offsets + (n_items - 1), sizeof(int64_t),
                                cudaMemcpyDeviceToHost, stream));
  VB_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (total <= 0) {
    *ids = static_cast<int32_t*>(alloc(sizeof(int32_t), 1));
    return 0;
  }
  // cub takes an int item count in the versions we support: refuse more pairs with a clear
  // message before allocating the ~24 bytes per pair below
  if (total > static_cast<int64_t>(INT32_MAX)) {
    throw std::runtime_error("volbench_gpu_ext: more than 2^31 (tile, Gaussian) pairs; "
                             "evaluate the grid in smaller ROIs (z-slabs)");
  }

  auto* keys_in = static_cast<uint64_t*>(alloc(sizeof(uint64_t) * total, 0));
  auto* vals_in = static_cast<int32_t*>(alloc(sizeof(int32_t) * total, 0));
  auto* keys_out = static_cast<uint64_t*>(alloc(sizeof(uint64_t) * total, 0));
  *ids = static_cast<int32_t*>(alloc(sizeof(int32_t) * total, 1));
  VB_LAUNCH(emit_kernel, blocks_for(n_items, T), T, 0, stream, boxes, key_base, offsets, n_items,
            ty, tx, keys_in, vals_in);
  VB_LAUNCH_CHECK();

  int end_bit = bits_for(n_keys);
  size_t sort_bytes = 0;
  VB_CUDA_CHECK(seam::sort_pairs(nullptr, sort_bytes, keys_in, keys_out, vals_in, *ids,
                                 static_cast<int>(total), end_bit, stream));
  void* sort_tmp = alloc(sort_bytes > 0 ? sort_bytes : 1, 0);
  VB_CUDA_CHECK(seam::sort_pairs(sort_tmp, sort_bytes, keys_in, keys_out, vals_in, *ids,
                                 static_cast<int>(total), end_bit, stream));
  VB_LAUNCH(ranges_kernel, blocks_for(total, T), T, 0, stream, keys_out, total, n_keys, *ranges);
  VB_LAUNCH_CHECK();
  return total;
}

}  // namespace vbgs
