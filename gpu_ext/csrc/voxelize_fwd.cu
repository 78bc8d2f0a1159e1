// Voxelizer forward: one block per 8^3 tile, one thread per voxel; the tile's sorted Gaussian
// list is streamed through shared memory in batches of 512.  Coordinates are relative to the ROI
// origin (voxel i at i * spacing, mean at mean - origin, taken once per Gaussian in double), so
// a grid far from 0 loses no float32 precision; index products are 64-bit (up to 2^31 - 1
// Gaussians).
#include "common.h"

namespace vbgs {
namespace {

__global__ void voxel_boxes_kernel(const float* __restrict__ means,
                                   const float* __restrict__ half_ext, int n, VoxGeom g,
                                   int* __restrict__ boxes) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int* b = boxes + 6 * i;
  bool ok = true;
  int lo[3], hi[3];
  for (int a = 0; a < 3; ++a) {
    float c = static_cast<float>(static_cast<double>(means[3 * i + a]) - g.o[a]);
    // conservative inclusive voxel range (same rule as the PyTorch twin), then tiles
    int vlo, vhi;
    ok = gm::axis_range(c, half_ext[3 * i + a], g.sp[a], g.shape[a] - 1, &vlo, &vhi) && ok;
    lo[a] = ok ? vlo / kVoxTile : 1;
    hi[a] = ok ? vhi / kVoxTile : 0;
  }
  for (int a = 0; a < 3; ++a) {
    b[2 * a] = ok ? lo[a] : 1;
    b[2 * a + 1] = ok ? hi[a] : 0;
  }
}

__global__ void __launch_bounds__(kVoxThreads)
    voxel_fwd_kernel(const float* __restrict__ means, const float* __restrict__ A,
                     const float* __restrict__ amps, const int32_t* __restrict__ ids,
                     const int64_t* __restrict__ ranges, VoxGeom g, float* __restrict__ out) {
  __shared__ float s_mu[kVoxThreads * 3];
  __shared__ float s_A[kVoxThreads * 9];
  __shared__ float s_amp[kVoxThreads];

  const int64_t tile = blockIdx.x;
  const int tx_n = g.tiles[2], ty_n = g.tiles[1];
  const int tx = static_cast<int>(tile % tx_n);
  const int ty = static_cast<int>((tile / tx_n) % ty_n);
  const int tz = static_cast<int>(tile / (static_cast<int64_t>(tx_n) * ty_n));
  const int t = threadIdx.x;
  const int iz = tz * kVoxTile + t / (kVoxTile * kVoxTile);
  const int iy = ty * kVoxTile + (t / kVoxTile) % kVoxTile;
  const int ix = tx * kVoxTile + t % kVoxTile;
  const bool inside = iz < g.shape[0] && iy < g.shape[1] && ix < g.shape[2];
  const float pz = iz * g.sp[0];  // relative to the ROI origin
  const float py = iy * g.sp[1];
  const float px = ix * g.sp[2];

  const int64_t start = ranges[2 * tile], end = ranges[2 * tile + 1];
  float acc = 0.f;
  for (int64_t batch = start; batch < end; batch += kVoxThreads) {
    __syncthreads();
    const int64_t j = batch + t;
    if (j < end) {
      const int64_t gi = ids[j];
#pragma unroll
      for (int a = 0; a < 3; ++a)
        s_mu[3 * t + a] = static_cast<float>(static_cast<double>(means[3 * gi + a]) - g.o[a]);
#pragma unroll
      for (int a = 0; a < 9; ++a) s_A[9 * t + a] = A[9 * gi + a];
      s_amp[t] = amps[gi];
    }
    __syncthreads();
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kVoxThreads), end - batch));
    for (int k = 0; k < cnt; ++k) {
      const float dz = pz - s_mu[3 * k], dy = py - s_mu[3 * k + 1], dx = px - s_mu[3 * k + 2];
      float y[3];
      const float m = gm::vox_maha(s_A + 9 * k, dz, dy, dx, y);
      if (m <= g.c2) acc += s_amp[k] * gm::gauss(m);
    }
  }
  if (inside) {
    out[(static_cast<int64_t>(iz) * g.shape[1] + iy) * g.shape[2] + ix] = acc;
  }
}

}  // namespace

void voxel_tile_boxes(const float* means, const float* half_ext, int n, const VoxGeom& g,
                      int* boxes, cudaStream_t stream) {
  if (n <= 0) return;
  VB_LAUNCH(voxel_boxes_kernel, blocks_for(n, 256), 256, 0, stream, means, half_ext, n, g, boxes);
  VB_LAUNCH_CHECK();
}

void voxelize_forward(const float* means, const float* A, const float* amps, const int32_t* ids,
                      const int64_t* ranges, const VoxGeom& g, float* out, cudaStream_t stream) {
  const int64_t n_tiles = static_cast<int64_t>(g.tiles[0]) * g.tiles[1] * g.tiles[2];
  if (n_tiles <= 0) return;
  if (n_tiles > 0x7fffffffLL) throw std::runtime_error("volbench_gpu_ext: too many tiles");
  VB_LAUNCH(voxel_fwd_kernel, static_cast<unsigned int>(n_tiles), kVoxThreads, 0, stream, means,
            A, amps, ids, ranges, g, out);
  VB_LAUNCH_CHECK();
}

}  // namespace vbgs
