// Compositing slice rasterizer backward: same blocks as the forward (slice, 16x16 tile, chunk
// of <= 8 channels), the tile's list walked back to front from the block's largest n_live.
// Every thread starts from its saved t_save and recovers T_k = T_{k+1} / (1 - w_k) (exact up to
// rounding: 1 - w >= 0.01 by the kWMax clamp), with the running background of its channels
// S_k = sum_f dL/dout_f sum_{j>k} w_j (T_j / T_{k+1}) v_jf, so that
//   composite: dL/dw_k = T_k (sum_f go_f v_kf - S_k) + dL/dalpha T_final / (1 - w_k),
//              dL/dv_kf = w_k T_k go_f,            S_{k-1} = w_k sum_f go_f v_kf + (1 - w_k) S_k
//   additive:  dL/dw_k = sum_f go_f v_kf + dL/dalpha,  dL/dv_kf = w_k go_f.
// dL/dw is linear in the channels: every channel chunk adds its part (the alpha term in chunk
// 0 only).  Per-(slice, Gaussian) gradients of m2, conic, wpeak and per-Gaussian gradients of
// the values: warp sums (every lane takes part: exact zeros without a term), then one atomicAdd
// per warp and value.  Index products are 64-bit.
#include "common.h"

namespace vbgs {
namespace {

template <int FC>
__global__ void __launch_bounds__(kPixThreads)
    composite_bwd_kernel(const float* __restrict__ m2, const float* __restrict__ conic,
                         const float* __restrict__ wpeak, const int64_t* __restrict__ order,
                         const float* __restrict__ values, const int32_t* __restrict__ ids,
                         const int64_t* __restrict__ ranges, CompGeom g,
                         const float* __restrict__ t_save, const int32_t* __restrict__ n_live,
                         const float* __restrict__ grad_out, const float* __restrict__ grad_alpha,
                         float* __restrict__ g_m2, float* __restrict__ g_conic,
                         float* __restrict__ g_wpeak, float* __restrict__ g_values) {
  __shared__ float s_m[kPixThreads * 2];
  __shared__ float s_c[kPixThreads * 3];
  __shared__ float s_w[kPixThreads];
  __shared__ float s_v[kPixThreads * FC];
  __shared__ int s_g[kPixThreads];
  __shared__ int s_live[kPixThreads / 32];

  const int64_t key = blockIdx.x;
  const int f0 = static_cast<int>(blockIdx.y) * FC;
  const int nf = min(FC, g.F - f0);
  const int64_t per_slice = static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  const int b = static_cast<int>(key / per_slice);
  const int tile = static_cast<int>(key % per_slice);
  const int tr = tile / g.tiles[1], tc = tile % g.tiles[1];
  const int t = threadIdx.x;
  const int lane = t & 31;
  const int r = tr * kPixTile + t / kPixTile;
  const int c = tc * kPixTile + t % kPixTile;
  const bool inside = r < g.H && c < g.W;
  const float pa = r * g.ps[0], pb = c * g.ps[1];
  const int64_t slice0 = static_cast<int64_t>(b) * g.N;
  const int64_t plane = static_cast<int64_t>(g.H) * g.W;
  const int64_t in_plane = static_cast<int64_t>(r) * g.W + c;
  const int64_t pix = b * plane + in_plane;

  const int64_t start = ranges[2 * key], end = ranges[2 * key + 1];
  float go[FC];
#pragma unroll
  for (int f = 0; f < FC; ++f)
    go[f] = (inside && f < nf) ? grad_out[(static_cast<int64_t>(b) * g.F + f0 + f) * plane + in_plane]
                               : 0.f;
  const float ga = (inside && blockIdx.y == 0) ? grad_alpha[pix] : 0.f;
  const int live = inside ? n_live[pix] : 0;
  float T = inside ? t_save[pix] : 1.f;  // T_{live}: the transmittance behind entry live - 1
  // T_final where the walk starts at the end of the list; below kTMin (a stopped walk) its
  // alpha terms are below ~100 kTMin |dL/dalpha| and are left out
  const float t_final = (live == end - start) ? T : 0.f;
  float S = 0.f;

  // the block walks from its largest n_live (warp max, then over the 8 warps)
  int wmax = live;
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, off));
  if (lane == 0) s_live[t >> 5] = wmax;
  __syncthreads();
  int bmax = 0;
#pragma unroll
  for (int w = 0; w < kPixThreads / 32; ++w) bmax = max(bmax, s_live[w]);

  for (int64_t bend = start + bmax; bend > start; bend -= kPixThreads) {
    const int64_t bstart = max(start, bend - kPixThreads);
    __syncthreads();  // the previous batch is consumed (and s_live read)
    const int64_t j = bstart + t;
    if (j < bend) {
      const int64_t gi = order[ids[j]];
      const int64_t p = slice0 + gi;
      s_g[t] = static_cast<int>(gi);
      s_m[2 * t] = m2[2 * p];
      s_m[2 * t + 1] = m2[2 * p + 1];
      s_c[3 * t] = conic[3 * p];
      s_c[3 * t + 1] = conic[3 * p + 1];
      s_c[3 * t + 2] = conic[3 * p + 2];
      s_w[t] = wpeak[p];
#pragma unroll
      for (int f = 0; f < FC; ++f)
        s_v[FC * t + f] = f < nf ? values[gi * g.F + f0 + f] : 0.f;
    }
    __syncthreads();
    const int cnt = static_cast<int>(bend - bstart);
    const int pos0 = static_cast<int>(bstart - start);
    for (int k = cnt - 1; k >= 0; --k) {  // uniform over the block: every lane reaches the sums
      const float A = s_c[3 * k], B = s_c[3 * k + 1], C = s_c[3 * k + 2];
      const float d0 = pa - s_m[2 * k], d1 = pb - s_m[2 * k + 1];
      const float q = gm::comp_maha(A, B, C, d0, d1);
      const bool hit = inside && pos0 + k < live && isfinite(q) && q <= g.c2;
      if (!__any_sync(0xffffffffu, hit)) continue;
      float vals[6 + FC];  // exact zeros for lanes without a term
#pragma unroll
      for (int v = 0; v < 6 + FC; ++v) vals[v] = 0.f;
      if (hit) {
        const float e = gm::gauss(fmaxf(q, 0.f));
        float om;
        bool clamped;
        const float w = gm::comp_weight(s_w[k], e, &om, &clamped);
        float dot = 0.f;
#pragma unroll
        for (int f = 0; f < FC; ++f) dot += go[f] * s_v[FC * k + f];
        float gw, wt;
        if (g.additive) {
          gw = dot + ga;
          wt = w;
        } else {
          const float Tk = T / om;
          gw = Tk * (dot - S) + ga * t_final / om;
          S = w * dot + om * S;
          T = Tk;
          wt = w * Tk;
        }
        gm::comp_grad_terms(true, clamped, gw, e, s_w[k], A, B, C, d0, d1, q, vals);
#pragma unroll
        for (int f = 0; f < FC; ++f) vals[6 + f] = wt * go[f];
      }
#pragma unroll
      for (int v = 0; v < 6; ++v) vals[v] = warp_sum(vals[v]);
#pragma unroll
      for (int f = 0; f < FC; ++f)
        if (f < nf) vals[6 + f] = warp_sum(vals[6 + f]);  // nf is uniform over the block
      if (lane == 0) {
        const int64_t gi = s_g[k];
        const int64_t p = slice0 + gi;
        atomicAdd(g_m2 + 2 * p, vals[0]);
        atomicAdd(g_m2 + 2 * p + 1, vals[1]);
        atomicAdd(g_conic + 3 * p, vals[2]);
        atomicAdd(g_conic + 3 * p + 1, vals[3]);
        atomicAdd(g_conic + 3 * p + 2, vals[4]);
        atomicAdd(g_wpeak + p, vals[5]);
#pragma unroll
        for (int f = 0; f < FC; ++f)
          if (f < nf) atomicAdd(g_values + gi * g.F + f0 + f, vals[6 + f]);
      }
    }
  }
}

template <int FC>
void launch_bwd(const float* m2, const float* conic, const float* wpeak, const int64_t* order,
                const float* values, const int32_t* ids, const int64_t* ranges, const CompGeom& g,
                const float* t_save, const int32_t* n_live, const float* grad_out,
                const float* grad_alpha, float* g_m2, float* g_conic, float* g_wpeak,
                float* g_values, int64_t n_keys, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(n_keys), static_cast<unsigned int>(comp_chunks(g.F)));
  VB_LAUNCH(composite_bwd_kernel<FC>, grid, kPixThreads, 0, stream, m2, conic, wpeak, order,
            values, ids, ranges, g, t_save, n_live, grad_out, grad_alpha, g_m2, g_conic, g_wpeak,
            g_values);
  VB_LAUNCH_CHECK();
}

}  // namespace

void composite_backward(const float* m2, const float* conic, const float* wpeak,
                        const int64_t* order, const float* values, const int32_t* ids,
                        const int64_t* ranges, const CompGeom& g, const float* t_save,
                        const int32_t* n_live, const float* grad_out, const float* grad_alpha,
                        float* g_m2, float* g_conic, float* g_wpeak, float* g_values,
                        cudaStream_t stream) {
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  if (n_keys <= 0) return;
  if (n_keys > 0x7fffffffLL) throw std::runtime_error("volbench_gpu_ext: too many tiles");
  switch (comp_chunk(g.F)) {
    case 1:
      launch_bwd<1>(m2, conic, wpeak, order, values, ids, ranges, g, t_save, n_live, grad_out,
                    grad_alpha, g_m2, g_conic, g_wpeak, g_values, n_keys, stream);
      break;
    case 4:
      launch_bwd<4>(m2, conic, wpeak, order, values, ids, ranges, g, t_save, n_live, grad_out,
                    grad_alpha, g_m2, g_conic, g_wpeak, g_values, n_keys, stream);
      break;
    default:
      launch_bwd<kCompMaxChunk>(m2, conic, wpeak, order, values, ids, ranges, g, t_save, n_live,
                                grad_out, grad_alpha, g_m2, g_conic, g_wpeak, g_values, n_keys,
                                stream);
  }
}

}  // namespace vbgs
