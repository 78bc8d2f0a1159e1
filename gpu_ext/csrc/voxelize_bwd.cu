// Voxelizer backward: same tiling as the forward; every thread holds dL/dV of its voxel, every
// Gaussian of the tile's list gets its 13 partial derivatives (mean 3, A 9, amp 1) summed over
// the warp with shuffles and added to global memory with one atomicAdd per warp and value.
// Coordinates relative to the ROI origin and 64-bit index products, as in the forward.
#include "common.h"

namespace vbgs {
namespace {

__global__ void __launch_bounds__(kVoxThreads)
    voxel_bwd_kernel(const float* __restrict__ grad_out, const float* __restrict__ means,
                     const float* __restrict__ A, const float* __restrict__ amps,
                     const int32_t* __restrict__ ids, const int64_t* __restrict__ ranges,
                     VoxGeom g, float* __restrict__ g_means, float* __restrict__ g_A,
                     float* __restrict__ g_amps) {
  __shared__ float s_mu[kVoxThreads * 3];
  __shared__ float s_A[kVoxThreads * 9];
  __shared__ float s_amp[kVoxThreads];
  __shared__ int s_id[kVoxThreads];

  const int64_t tile = blockIdx.x;
  const int tx_n = g.tiles[2], ty_n = g.tiles[1];
  const int tx = static_cast<int>(tile % tx_n);
  const int ty = static_cast<int>((tile / tx_n) % ty_n);
  const int tz = static_cast<int>(tile / (static_cast<int64_t>(tx_n) * ty_n));
  const int t = threadIdx.x;
  const int lane = t & 31;
  const int iz = tz * kVoxTile + t / (kVoxTile * kVoxTile);
  const int iy = ty * kVoxTile + (t / kVoxTile) % kVoxTile;
  const int ix = tx * kVoxTile + t % kVoxTile;
  const bool inside = iz < g.shape[0] && iy < g.shape[1] && ix < g.shape[2];
  const float pz = iz * g.sp[0];  // relative to the ROI origin
  const float py = iy * g.sp[1];
  const float px = ix * g.sp[2];
  const float go =
      inside ? grad_out[(static_cast<int64_t>(iz) * g.shape[1] + iy) * g.shape[2] + ix] : 0.f;

  const int64_t start = ranges[2 * tile], end = ranges[2 * tile + 1];
  for (int64_t batch = start; batch < end; batch += kVoxThreads) {
    __syncthreads();
    const int64_t j = batch + t;
    if (j < end) {
      const int64_t gi = ids[j];
      s_id[t] = static_cast<int>(gi);
#pragma unroll
      for (int a = 0; a < 3; ++a)
        s_mu[3 * t + a] = static_cast<float>(static_cast<double>(means[3 * gi + a]) - g.o[a]);
#pragma unroll
      for (int a = 0; a < 9; ++a) s_A[9 * t + a] = A[9 * gi + a];
      s_amp[t] = amps[gi];
    }
    __syncthreads();
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kVoxThreads), end - batch));
    for (int k = 0; k < cnt; ++k) {  // uniform over the block: every lane reaches the shuffles
      const float d[3] = {pz - s_mu[3 * k], py - s_mu[3 * k + 1], px - s_mu[3 * k + 2]};
      const float* Ak = s_A + 9 * k;
      float y[3];
      const float m = gm::vox_maha(Ak, d[0], d[1], d[2], y);
      const bool hit = inside && go != 0.f && m <= g.c2;
      if (!__any_sync(0xffffffffu, hit)) continue;
      float e = hit ? gm::gauss(m) : 0.f;
      // lanes without a hit contribute exact zeros (also when their y is not finite)
      float vals[13];
      gm::vox_grad_terms(hit, go, e, s_amp[k], Ak, y, d, vals);
#pragma unroll
      for (int v = 0; v < 13; ++v) vals[v] = warp_sum(vals[v]);
      if (lane == 0) {
        const int64_t gi = s_id[k];
#pragma unroll
        for (int c = 0; c < 3; ++c) atomicAdd(g_means + 3 * gi + c, vals[c]);
#pragma unroll
        for (int c = 0; c < 9; ++c) atomicAdd(g_A + 9 * gi + c, vals[3 + c]);
        atomicAdd(g_amps + gi, vals[12]);
      }
    }
  }
}

}  // namespace

void voxelize_backward(const float* grad_out, const float* means, const float* A,
                       const float* amps, const int32_t* ids, const int64_t* ranges,
                       const VoxGeom& g, float* g_means, float* g_A, float* g_amps,
                       cudaStream_t stream) {
  const int64_t n_tiles = static_cast<int64_t>(g.tiles[0]) * g.tiles[1] * g.tiles[2];
  if (n_tiles <= 0) return;
  if (n_tiles > 0x7fffffffLL) throw std::runtime_error("volbench_gpu_ext: too many tiles");
  VB_LAUNCH(voxel_bwd_kernel, static_cast<unsigned int>(n_tiles), kVoxThreads, 0, stream,
            grad_out, means, A, amps, ids, ranges, g, g_means, g_A, g_amps);
  VB_LAUNCH_CHECK();
}

}  // namespace vbgs
