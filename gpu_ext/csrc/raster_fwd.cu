// Slice rasterizer forward (both modes: the focus model / 3DGS prelude runs in torch and hands
// over 2D footprints).  One block per (camera, 16x16 tile), one thread per pixel, the tile's
// sorted list streamed through shared memory; additive accumulation (no occlusion).  Index
// products are 64-bit (up to 2^31 - 1 (camera, Gaussian) items).
#include "common.h"

namespace vbgs {
namespace {

__global__ void raster_boxes_kernel(const float* __restrict__ mean2d,
                                    const float* __restrict__ radii, PixGeom g,
                                    int* __restrict__ boxes, int64_t* __restrict__ key_base) {
  const int64_t n = static_cast<int64_t>(g.B) * g.N;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int cam = static_cast<int>(i / g.N);
  const int lim[2] = {g.H - 1, g.W - 1};
  bool ok = true;
  int lo[2], hi[2];
  for (int a = 0; a < 2; ++a) {
    int plo, phi;
    ok = gm::axis_range(mean2d[2 * i + a] / g.ps[a], radii[2 * i + a], 1.f, lim[a], &plo,
                        &phi) && ok;
    lo[a] = ok ? plo / kPixTile : 1;
    hi[a] = ok ? phi / kPixTile : 0;
  }
  int* b = boxes + 6 * i;
  b[0] = 0;
  b[1] = ok ? 0 : -1;
  b[2] = ok ? lo[0] : 1;
  b[3] = ok ? hi[0] : 0;
  b[4] = ok ? lo[1] : 1;
  b[5] = ok ? hi[1] : 0;
  key_base[i] = static_cast<int64_t>(cam) * g.tiles[0] * g.tiles[1];
}

__global__ void __launch_bounds__(kPixThreads)
    raster_fwd_kernel(const float* __restrict__ mean2d, const float* __restrict__ conic,
                      const float* __restrict__ weight, const int32_t* __restrict__ ids,
                      const int64_t* __restrict__ ranges, PixGeom g, float* __restrict__ out) {
  __shared__ float s_m[kPixThreads * 2];
  __shared__ float s_c[kPixThreads * 3];
  __shared__ float s_w[kPixThreads];

  const int64_t key = blockIdx.x;
  const int64_t per_cam = static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  const int cam = static_cast<int>(key / per_cam);
  const int tile = static_cast<int>(key % per_cam);
  const int tr = tile / g.tiles[1], tc = tile % g.tiles[1];
  const int t = threadIdx.x;
  const int r = tr * kPixTile + t / kPixTile;
  const int c = tc * kPixTile + t % kPixTile;
  const bool inside = r < g.H && c < g.W;
  const float pa = r * g.ps[0], pb = c * g.ps[1];

  const int64_t start = ranges[2 * key], end = ranges[2 * key + 1];
  float acc = 0.f;
  for (int64_t batch = start; batch < end; batch += kPixThreads) {
    __syncthreads();
    const int64_t j = batch + t;
    if (j < end) {
      const int64_t gi = ids[j];
      s_m[2 * t] = mean2d[2 * gi];
      s_m[2 * t + 1] = mean2d[2 * gi + 1];
      s_c[3 * t] = conic[3 * gi];
      s_c[3 * t + 1] = conic[3 * gi + 1];
      s_c[3 * t + 2] = conic[3 * gi + 2];
      s_w[t] = weight[gi];
    }
    __syncthreads();
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kPixThreads), end - batch));
    for (int k = 0; k < cnt; ++k) {
      const float da = pa - s_m[2 * k], db = pb - s_m[2 * k + 1];
      const float m =
          fmaxf(gm::pix_maha_raw(s_c[3 * k], s_c[3 * k + 1], s_c[3 * k + 2], da, db), 0.f);
      if (m <= g.c2) acc += s_w[k] * gm::gauss(m);
    }
  }
  if (inside) out[(static_cast<int64_t>(cam) * g.H + r) * g.W + c] = acc;
}

}  // namespace

void raster_tile_boxes(const float* mean2d, const float* radii, const PixGeom& g, int* boxes,
                       int64_t* key_base, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(g.B) * g.N;
  if (n <= 0) return;
  VB_LAUNCH(raster_boxes_kernel, blocks_for(n, 256), 256, 0, stream, mean2d, radii, g, boxes,
            key_base);
  VB_LAUNCH_CHECK();
}

void raster_forward(const float* mean2d, const float* conic, const float* weight,
                    const int32_t* ids, const int64_t* ranges, const PixGeom& g, float* out,
                    cudaStream_t stream) {
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  if (n_keys <= 0) return;
  if (n_keys > 0x7fffffffLL) throw std::runtime_error("volbench_gpu_ext: too many tiles");
  VB_LAUNCH(raster_fwd_kernel, static_cast<unsigned int>(n_keys), kPixThreads, 0, stream, mean2d,
            conic, weight, ids, ranges, g, out);
  VB_LAUNCH_CHECK();
}

}  // namespace vbgs
