// CUDA shim of the CPU execution harness (tests/gpu_ext_harness): g++ compiles the .cu files of
// gpu_ext/csrc as C++ with this directory first on the include path, so their
// `#include <cuda_runtime.h>` lands here.  It supplies the CUDA dialect the kernels use
// (qualifiers, dim3, threadIdx/blockIdx, __shared__, __syncthreads, warp collectives, atomics,
// the runtime calls) on top of the fiber runtime in emu.cpp: every CUDA thread is a fiber, the
// blocks of a grid run one after the other.  Kernel launches go through VB_LAUNCH (common.h),
// which this header defines first; CUB sits behind the seam in tiles.cu (host_seam.cpp).
// Nothing here is CUDA's code: it is a small reimplementation of the documented semantics.
#pragma once

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define VBGS_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Block-shared arrays are function statics (shared by all fibers of the running block) in one
// section, which the runtime fills with a poison pattern (0xff bytes: NaN / -1) before each block.
#define __shared__ static __attribute__((section("vbemu_shared"), aligned(16)))

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

namespace vbemu {

struct ThreadCtx {
  dim3 idx;
};

extern const ThreadCtx* g_cur;  // the running fiber
extern dim3 g_block_idx, g_block_dim, g_grid_dim;

[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

void syncthreads(const char* file, int line);

enum Coll { kShflDown, kShflUp, kShflXor, kShflIdx, kAny, kAll, kBallot, kSyncWarp };
// One warp collective of the running fiber: waits until every lane named in `mask` has reached
// the same collective (same call site, same mask), fails loudly when one has exited or waits
// elsewhere; returns this lane's result (the bits of a value of at most 8 bytes).
uint64_t collective(Coll kind, const char* file, int line, unsigned mask, uint64_t bits, int arg,
                    int width);

// Runs entry(ctx) as every thread of every block of the grid (blocks in turn).
void run_grid(const char* name, dim3 grid, dim3 block, size_t dyn_smem, void (*entry)(void*),
              void* ctx);

cudaError_t take_last_error();
void set_last_error(cudaError_t e);

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp value type");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

template <class T>
T shfl(Coll kind, const char* file, int line, unsigned mask, T v, int arg, int width) {
  return from_bits<T>(collective(kind, file, line, mask, to_bits(v), arg, width));
}

template <class... P, class... A>
void launch(const char* name, dim3 grid, dim3 block, size_t smem, cudaStream_t,
            void (*kernel)(P...), A&&... args) {
  // arguments are copied once at the launch, like CUDA's parameter buffer
  struct Ctx {
    void (*k)(P...);
    std::tuple<typename std::decay<P>::type...> args;
  } ctx{kernel, std::tuple<typename std::decay<P>::type...>(std::forward<A>(args)...)};
  run_grid(
      name, grid, block, smem,
      [](void* c) {
        auto* x = static_cast<Ctx*>(c);
        std::apply(x->k, x->args);
      },
      &ctx);
}

}  // namespace vbemu

#define VB_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::vbemu::launch(#kernel, dim3(grid), dim3(block), (smem), (stream), kernel, __VA_ARGS__)

#define threadIdx (::vbemu::g_cur->idx)
#define blockIdx (::vbemu::g_block_idx)
#define blockDim (::vbemu::g_block_dim)
#define gridDim (::vbemu::g_grid_dim)
#define warpSize 32

#define __syncthreads() ::vbemu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...)                                                                   \
  ((void)::vbemu::collective(::vbemu::kSyncWarp, __FILE__, __LINE__,                      \
                             (__VA_ARGS__ + 0u) ?: 0xffffffffu, 0, 0, 32))
#define __shfl_down_sync(mask, v, delta, ...) \
  ::vbemu::shfl(::vbemu::kShflDown, __FILE__, __LINE__, (mask), (v), (delta), (__VA_ARGS__ + 0) ?: 32)
#define __shfl_up_sync(mask, v, delta, ...) \
  ::vbemu::shfl(::vbemu::kShflUp, __FILE__, __LINE__, (mask), (v), (delta), (__VA_ARGS__ + 0) ?: 32)
#define __shfl_xor_sync(mask, v, lane_mask, ...) \
  ::vbemu::shfl(::vbemu::kShflXor, __FILE__, __LINE__, (mask), (v), (lane_mask), (__VA_ARGS__ + 0) ?: 32)
#define __shfl_sync(mask, v, src, ...) \
  ::vbemu::shfl(::vbemu::kShflIdx, __FILE__, __LINE__, (mask), (v), (src), (__VA_ARGS__ + 0) ?: 32)
#define __any_sync(mask, pred) \
  (::vbemu::collective(::vbemu::kAny, __FILE__, __LINE__, (mask), (pred) ? 1 : 0, 0, 32) != 0)
#define __all_sync(mask, pred) \
  (::vbemu::collective(::vbemu::kAll, __FILE__, __LINE__, (mask), (pred) ? 1 : 0, 0, 32) != 0)
#define __ballot_sync(mask, pred) \
  static_cast<unsigned>(::vbemu::collective(::vbemu::kBallot, __FILE__, __LINE__, (mask), (pred) ? 1 : 0, 0, 32))

// atomics: blocks run one at a time and fibers switch only at barriers and collectives, so a
// read-modify-write is atomic
template <class T>
inline T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}

// device math used by the kernels (__expf: the exact expf here; the GPU's is an approximation
// within 2 ulp + a few 1e-7 relative, covered by the CUDA parity tolerances)
inline float __expf(float x) { return expf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// runtime API (host memory stands for device memory; the stream is ignored: launches run at once)
inline cudaError_t cudaGetLastError() { return ::vbemu::take_last_error(); }
inline cudaError_t cudaPeekAtLastError() {
  cudaError_t e = ::vbemu::take_last_error();
  ::vbemu::set_last_error(e);
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t = nullptr) {
  if (n) std::memset(p, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  if (n) std::memcpy(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
