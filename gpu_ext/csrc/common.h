// Shared declarations of the volbench_gpu_ext kernels.  Nothing here touches torch: the .cu
// files work on raw device pointers; bindings.cpp is the only translation unit that sees tensors.
#pragma once

#include <cuda_runtime.h>

#include "gaussian_math.h"

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace vbgs {

constexpr int kVoxTile = 8;                                // voxelizer tile edge (8^3 voxels)
constexpr int kVoxThreads = kVoxTile * kVoxTile * kVoxTile;  // one thread per voxel of a tile
constexpr int kPixTile = 16;                               // rasterizer tile edge (16x16)
constexpr int kPixThreads = kPixTile * kPixTile;           // one thread per pixel of a tile

inline void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("volbench_gpu_ext: ") + what + " failed at " + file +
                             ":" + std::to_string(line) + ": " + cudaGetErrorString(err));
  }
}
#define VB_CUDA_CHECK(expr) ::vbgs::check_cuda((expr), #expr, __FILE__, __LINE__)
#define VB_LAUNCH_CHECK() ::vbgs::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

// Every kernel launch goes through VB_LAUNCH, so that the CPU execution harness
// (tests/gpu_ext_harness, which compiles these files as C++ with its own cuda_runtime.h that
// defines VB_LAUNCH first) runs the same sources.
#ifndef VB_LAUNCH
#define VB_LAUNCH(kernel, grid, block, smem, stream, ...) \
  kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

// Allocation callback (implemented with torch tensors in bindings.cpp).  slot 0: scratch freed
// by the caller after the call; slot 1: the sorted Gaussian ids (int32, kept); slot 2: the
// per-tile ranges (int64 pairs [start, end), kept).
using AllocFn = std::function<void*(size_t bytes, int slot)>;

// Per-tile sorted lists of (item) ids.  Every item i owns an inclusive box of tiles
// boxes[6i..6i+5] = (z0, z1, y0, y1, x0, x1) in a (tz, ty, tx) tile grid (empty when z1 < z0 ...)
// and a key base key_base[i] (nullptr = 0) added to the linear tile index.  Keys range over
// [0, n_keys).  Returns the number of (tile, item) pairs; *ids (slot 1, length = pairs) holds
// the items sorted by key, stable (ascending item id within a tile), and *ranges (slot 2,
// length 2 n_keys) the [start, end) of every key in *ids.
int64_t build_tile_lists(const int* boxes, const int64_t* key_base, int n_items, int tz,
                         int ty, int tx, int64_t n_keys, const AllocFn& alloc,
                         cudaStream_t stream, int32_t** ids, int64_t** ranges);

// ------------------------------------------------------------------ voxelizer
struct VoxGeom {
  double o[3];   // world position of voxel (0,0,0) of the ROI (double: it can be far from 0;
                 // the kernels take mean - o once per Gaussian and work relative to it)
  float sp[3];   // spacing
  int shape[3];  // ROI shape (z, y, x)
  int tiles[3];  // tile grid = ceil(shape / 8)
  float c2;      // cutoff^2
};

// The checked geometry of a voxelizer call (bindings.cpp; the CPU harness's driver)
inline VoxGeom make_vox_geom(const double* origin, const double* spacing, const int64_t* shape,
                             double cutoff) {
  VoxGeom g;
  for (int a = 0; a < 3; ++a) {
    if (!(spacing[a] > 0)) throw std::runtime_error("volbench_gpu_ext: spacing must be > 0");
    if (shape[a] < 0 || shape[a] >= (1LL << 30))
      throw std::runtime_error("volbench_gpu_ext: bad shape");
    g.o[a] = origin[a];
    g.sp[a] = static_cast<float>(spacing[a]);
    g.shape[a] = static_cast<int>(shape[a]);
    g.tiles[a] = static_cast<int>((shape[a] + kVoxTile - 1) / kVoxTile);
  }
  g.c2 = static_cast<float>(cutoff * cutoff);
  return g;
}

// boxes (n x 6 ints) of the tiles each Gaussian's bounding box touches
void voxel_tile_boxes(const float* means, const float* half_ext, int n, const VoxGeom& g,
                      int* boxes, cudaStream_t stream);

void voxelize_forward(const float* means, const float* A, const float* amps, const int32_t* ids,
                      const int64_t* ranges, const VoxGeom& g, float* out, cudaStream_t stream);

void voxelize_backward(const float* grad_out, const float* means, const float* A,
                       const float* amps, const int32_t* ids, const int64_t* ranges,
                       const VoxGeom& g, float* g_means, float* g_A, float* g_amps,
                       cudaStream_t stream);

// ------------------------------------------------------------------ slice rasterizer
struct PixGeom {
  int B, N;      // cameras, Gaussians per camera (item = b * N + n)
  int H, W;      // image size
  int tiles[2];  // ceil(H / 16), ceil(W / 16)
  float ps[2];   // pixel size (rows, columns)
  float c2;      // cutoff^2
};

// The checked geometry of a rasterizer call (bindings.cpp; the CPU harness's driver)
inline PixGeom make_pix_geom(int64_t B, int64_t N, int64_t H, int64_t W, const double* ps,
                             double cutoff) {
  if (!(ps[0] > 0 && ps[1] > 0))
    throw std::runtime_error("volbench_gpu_ext: pixel_size must be 2 positive numbers");
  if (B < 0 || N < 0 || H < 0 || W < 0 || H >= (1LL << 30) || W >= (1LL << 30))
    throw std::runtime_error("volbench_gpu_ext: bad image geometry");
  if (B * N >= (1LL << 31))
    throw std::runtime_error("volbench_gpu_ext: too many (camera, Gaussian) pairs");
  PixGeom g;
  g.B = static_cast<int>(B);
  g.N = static_cast<int>(N);
  g.H = static_cast<int>(H);
  g.W = static_cast<int>(W);
  g.tiles[0] = static_cast<int>((H + kPixTile - 1) / kPixTile);
  g.tiles[1] = static_cast<int>((W + kPixTile - 1) / kPixTile);
  g.ps[0] = static_cast<float>(ps[0]);
  g.ps[1] = static_cast<float>(ps[1]);
  g.c2 = static_cast<float>(cutoff * cutoff);
  return g;
}

void raster_tile_boxes(const float* mean2d, const float* radii, const PixGeom& g, int* boxes,
                       int64_t* key_base, cudaStream_t stream);

void raster_forward(const float* mean2d, const float* conic, const float* weight,
                    const int32_t* ids, const int64_t* ranges, const PixGeom& g, float* out,
                    cudaStream_t stream);

void raster_backward(const float* grad_out, const float* mean2d, const float* conic,
                     const float* weight, const int32_t* ids, const int64_t* ranges,
                     const PixGeom& g, float* g_mean2d, float* g_conic, float* g_weight,
                     cudaStream_t stream);

// ------------------------------------------------------------------ compositing slice rasterizer
// Splat stage of workflow/volbench/gaussian_ops/composite.py (seed 004 eqs. 1-2): per slice b,
// the pairs (b, order[b, k]) in compositing order (k = rank, front first; -1 = padding).  Item
// i = b * N + k; its tile box comes from the cutoff ellipse of (m2, conic) of the pair (b,
// order[i]); build_tile_lists's stable sort keeps ascending k inside every (slice, tile) key, so
// every tile list is in compositing order.
struct CompGeom {
  int B, N;      // slices, Gaussians (items = pairs (b, k) = B * N)
  int H, W;      // image size
  int F;         // channels of values (N, F)
  int tiles[2];  // ceil(H / 16), ceil(W / 16)
  float ps[2];   // pixel size (rows, columns)
  float c2;      // cutoff^2
  int additive;  // 1: out = sum w v, alpha = sum w (no transmittance)
};

constexpr int kCompMaxChunk = 8;  // channels per block (grid.y = ceil(F / chunk))

// channels per block for F channels: 1, 4 or 8 (the kernels' template instantiations)
inline int comp_chunk(int F) { return F <= 1 ? 1 : (F <= 4 ? 4 : kCompMaxChunk); }
inline int comp_chunks(int F) {
  const int c = comp_chunk(F);
  return F <= 0 ? 1 : (F + c - 1) / c;
}

// The checked geometry of a compositing call (bindings.cpp; the CPU harness's driver)
inline CompGeom make_comp_geom(int64_t B, int64_t N, int64_t H, int64_t W, int64_t F, double ps_r,
                               double ps_c, double cutoff, bool additive) {
  const double ps[2] = {ps_r, ps_c};
  if (!(cutoff > 0)) throw std::runtime_error("volbench_gpu_ext: cutoff must be > 0");
  if (F < 0 || F > 65535LL * kCompMaxChunk)
    throw std::runtime_error("volbench_gpu_ext: bad number of value channels");
  const PixGeom p = make_pix_geom(B, N, H, W, ps, cutoff);
  CompGeom g;
  g.B = p.B;
  g.N = p.N;
  g.H = p.H;
  g.W = p.W;
  g.F = static_cast<int>(F);
  g.tiles[0] = p.tiles[0];
  g.tiles[1] = p.tiles[1];
  g.ps[0] = p.ps[0];
  g.ps[1] = p.ps[1];
  g.c2 = p.c2;
  g.additive = additive ? 1 : 0;
  return g;
}

// boxes (B*N x 6 ints) and key bases (b * tiles) of the items (b, k); -1 / culled -> empty
void composite_tile_boxes(const float* m2, const float* conic, const int64_t* order,
                          const CompGeom& g, int* boxes, int64_t* key_base, cudaStream_t stream);

// out (B,F,H,W), alpha (B,H,W); saved per pixel: t_save (the transmittance where the backward
// starts) and n_live (how many entries of the pixel's tile list the backward walks)
void composite_forward(const float* m2, const float* conic, const float* wpeak,
                       const int64_t* order, const float* values, const int32_t* ids,
                       const int64_t* ranges, const CompGeom& g, float* out, float* alpha,
                       float* t_save, int32_t* n_live, cudaStream_t stream);

// gradients accumulated (atomicAdd) into zero-initialised g_m2 (B,N,2), g_conic (B,N,3),
// g_wpeak (B,N), g_values (N,F)
void composite_backward(const float* m2, const float* conic, const float* wpeak,
                        const int64_t* order, const float* values, const int32_t* ids,
                        const int64_t* ranges, const CompGeom& g, const float* t_save,
                        const int32_t* n_live, const float* grad_out, const float* grad_alpha,
                        float* g_m2, float* g_conic, float* g_wpeak, float* g_values,
                        cudaStream_t stream);

#if defined(__CUDACC__) || defined(VBGS_EMULATION)
// warp sum (all 32 lanes must call)
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  return v;
}
#endif

inline unsigned int blocks_for(int64_t n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

}  // namespace vbgs
