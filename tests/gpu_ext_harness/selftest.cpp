// Self-tests of the fiber runtime: small kernels that use each emulated feature correctly (the
// results are checked here), and broken ones that the runtime must stop with "vbemu: FAIL".
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "emu_control.h"

namespace vbgs {
namespace seam {
cudaError_t sort_pairs(void* tmp, size_t& bytes, const uint64_t* keys_in, uint64_t* keys_out,
                       const int32_t* vals_in, int32_t* vals_out, int n, int end_bit,
                       cudaStream_t stream);
}
}  // namespace vbgs

namespace {

constexpr unsigned kFull = 0xffffffffu;

__global__ void k_collectives(int* out) {
  const int t = threadIdx.x, lane = t & 31;
  float v = static_cast<float>(lane + 1);
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(kFull, v, off);
  int x = lane;
  for (int m = 16; m > 0; m >>= 1) x += __shfl_xor_sync(kFull, x, m);
  const int b = __shfl_sync(kFull, lane * 3, 7);
  const int u = __shfl_up_sync(kFull, lane, 1);
  const int s8 = __shfl_down_sync(kFull, lane, 4, 8);
  const bool any = __any_sync(kFull, lane == 13), none = __any_sync(kFull, false);
  const bool all = __all_sync(kFull, lane < 40), notall = __all_sync(kFull, lane != 3);
  const unsigned bal = __ballot_sync(kFull, lane & 1);
  int h;  // two disjoint masks in one warp
  if (lane < 16) {
    h = __shfl_sync(0x0000ffffu, lane * 2, 3);
  } else {
    h = __shfl_sync(0xffff0000u, lane * 2, 20);
  }
  __syncwarp();
  int* o = out + 10 * (blockIdx.x * blockDim.x + t);
  o[0] = static_cast<int>(v);
  o[1] = x;
  o[2] = b;
  o[3] = u;
  o[4] = s8;
  o[5] = any + 2 * none + 4 * all + 8 * notall;
  o[6] = static_cast<int>(bal);
  o[7] = h;
}

int expect_collectives() {
  const int nt = 64, nb = 2;
  std::vector<int> out(10 * nt * nb, -99);
  VB_LAUNCH(k_collectives, nb, nt, 0, nullptr, out.data());
  // the shfl_down tree on the host: an out-of-range source returns the lane's own value
  float tree[32];
  for (int l = 0; l < 32; ++l) tree[l] = static_cast<float>(l + 1);
  for (int off = 16; off > 0; off >>= 1) {
    float next[32];
    for (int l = 0; l < 32; ++l) next[l] = tree[l] + (l + off < 32 ? tree[l + off] : tree[l]);
    std::copy(next, next + 32, tree);
  }
  int bad = tree[0] == 528.0f ? 0 : 1;
  for (int t = 0; t < nt * nb; ++t) {
    const int lane = t & 31;
    const int* o = out.data() + 10 * t;
    const int want[8] = {static_cast<int>(tree[lane]), 496, 21, lane ? lane - 1 : 0,
                         (lane & 7) < 4 ? lane + 4 : lane, 1 + 4,
                         static_cast<int>(0xaaaaaaaau), lane < 16 ? 6 : 40};
    for (int k = 0; k < 8; ++k) {
      if (o[k] != want[k]) {
        std::fprintf(stderr, "collectives: thread %d result %d is %d, expected %d\n", t, k, o[k],
                     want[k]);
        ++bad;
      }
    }
  }
  return bad;
}

__global__ void k_barrier(const float* in, float* out, int live) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  if (t >= live) return;  // the barrier below counts the live threads only
  s[t] = in[t];
  __syncthreads();
  out[t] = s[live - 1 - t];
}

__global__ void k_poison(float* outf, int* outi) {
  __shared__ float sf[64];
  __shared__ int si[64];
  const int t = threadIdx.x;
  const float f = sf[t];
  const int i = si[t];
  __syncthreads();
  sf[t] = 1.0f;  // the next block must see poison again
  si[t] = 7;
  outf[64 * blockIdx.x + t] = f;
  outi[64 * blockIdx.x + t] = i;
}

__global__ void k_missing_barrier(float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = static_cast<float>(t);
  out[t] = s[(t + 1) % 64];  // no __syncthreads: thread 0 runs first and reads poison
}

__global__ void k_diverge(float* out) {
  const int lane = threadIdx.x & 31;
  float v = 1.0f;
  if (lane < 16) {
    v = __shfl_down_sync(kFull, v, 1);
  } else {
    v = __shfl_down_sync(kFull, v, 2);
  }
  out[threadIdx.x] = v;
}

__global__ void k_exited_lane(float* out) {
  const int lane = threadIdx.x & 31;
  if (lane == 5) return;
  out[threadIdx.x] = __shfl_down_sync(kFull, 1.0f, 1);
}

__global__ void k_coll_vs_barrier(float* out) {
  const int lane = threadIdx.x & 31;
  float v = 1.0f;
  if (lane == 0) {
    __syncthreads();
  } else {
    v = __shfl_down_sync(kFull, v, 1);
  }
  out[threadIdx.x] = v;
}

__global__ void k_barrier_sites(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void k_mask_self(float* out) {
  out[threadIdx.x] = __shfl_down_sync(0x2u, 1.0f, 1);  // lane 0 is not in its mask
}

__global__ void k_shared_oob(float* out) {
  __shared__ float s[32];
  const int t = threadIdx.x;
  s[t + 1] = 1.0f;  // thread 31 writes past the end
  __syncthreads();
  out[t] = s[t];
}

__global__ void k_noop(float*) {}

}  // namespace

int run_selftest(const std::string& name) {
  std::vector<float> f(4096, 0.0f);
  std::vector<int> i(4096, 0);
  if (name == "collectives") {
    const int bad = expect_collectives();
    if (bad) return 1;
  } else if (name == "barrier") {
    std::vector<float> in(256);
    for (int t = 0; t < 256; ++t) in[t] = 0.5f * t;
    VB_LAUNCH(k_barrier, 3, 256, 0, nullptr, in.data(), f.data(), 200);
    for (int t = 0; t < 200; ++t)
      if (f[t] != in[199 - t]) return 1;
  } else if (name == "poison") {
    VB_LAUNCH(k_poison, 2, 64, 0, nullptr, f.data(), i.data());
    for (int t = 0; t < 128; ++t)
      if (!std::isnan(f[t]) || i[t] != -1) return 1;
  } else if (name == "missing_barrier") {
    VB_LAUNCH(k_missing_barrier, 1, 64, 0, nullptr, f.data());
    if (!std::isnan(f[0]) || f[63] != 0.0f) return 1;
  } else if (name == "launch_config") {
    VB_LAUNCH(k_noop, 1, 2048, 0, nullptr, f.data());
    if (cudaGetLastError() != cudaErrorInvalidConfiguration) return 1;
    VB_LAUNCH(k_noop, 1, 32, 0, nullptr, f.data());
    if (cudaGetLastError() != cudaSuccess) return 1;
  } else if (name == "diverge") {
    VB_LAUNCH(k_diverge, 1, 32, 0, nullptr, f.data());
  } else if (name == "exited_lane") {
    VB_LAUNCH(k_exited_lane, 1, 32, 0, nullptr, f.data());
  } else if (name == "coll_vs_barrier") {
    VB_LAUNCH(k_coll_vs_barrier, 1, 32, 0, nullptr, f.data());
  } else if (name == "barrier_sites") {
    VB_LAUNCH(k_barrier_sites, 1, 64, 0, nullptr, f.data());
  } else if (name == "mask_self") {
    VB_LAUNCH(k_mask_self, 1, 32, 0, nullptr, f.data());
  } else if (name == "shared_oob") {
    VB_LAUNCH(k_shared_oob, 1, 32, 0, nullptr, f.data());
  } else if (name == "sort_bits") {
    const uint64_t keys[3] = {3, 300, 1};
    const int32_t vals[3] = {0, 1, 2};
    uint64_t ko[3];
    int32_t vo[3];
    size_t bytes = 0;
    char tmp[16];
    vbgs::seam::sort_pairs(nullptr, bytes, keys, ko, vals, vo, 3, 8, nullptr);
    vbgs::seam::sort_pairs(tmp, bytes, keys, ko, vals, vo, 3, 8, nullptr);
    std::printf("sort_bits: keys %llu %llu %llu\n", (unsigned long long)ko[0],
                (unsigned long long)ko[1], (unsigned long long)ko[2]);
  } else {
    std::fprintf(stderr, "unknown selftest %s\n", name.c_str());
    return 2;
  }
  std::printf("selftest %s ok\n", name.c_str());
  return 0;
}
