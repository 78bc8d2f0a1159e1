// Host stand-ins for the CUB calls behind the seam in gpu_ext/csrc/tiles.cu (namespace
// vbgs::seam): an inclusive scan and a stable sort of (key, value) pairs by the low end_bit bits
// of the key, with CUB's two-phase protocol (tmp == nullptr: report the scratch size).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace vbgs {
namespace seam {

cudaError_t inclusive_sum(void* tmp, size_t& bytes, const int64_t* in, int64_t* out, int n,
                          cudaStream_t) {
  if (!tmp) {
    bytes = 16;
    return cudaSuccess;
  }
  if (n < 0 || !in || !out) return cudaErrorInvalidValue;
  int64_t acc = 0;
  for (int i = 0; i < n; ++i) {
    acc += in[i];
    // a store only where the value changes: the big-index test scans hundreds of millions of
    // lazily mapped zeros, which must stay unmapped
    if (out[i] != acc) out[i] = acc;
  }
  return cudaSuccess;
}

cudaError_t sort_pairs(void* tmp, size_t& bytes, const uint64_t* keys_in, uint64_t* keys_out,
                       const int32_t* vals_in, int32_t* vals_out, int n, int end_bit,
                       cudaStream_t) {
  if (!tmp) {
    bytes = 16;
    return cudaSuccess;
  }
  if (n < 0 || end_bit < 1 || end_bit > 64) return cudaErrorInvalidValue;
  if (n > 0 && (keys_in == keys_out || static_cast<const void*>(vals_in) == vals_out))
    vbemu::fail("sort_pairs: input and output buffers alias (CUB needs distinct ones)");
  const uint64_t limit = end_bit == 64 ? ~0ull : (1ull << end_bit) - 1;
  for (int i = 0; i < n; ++i) {
    if (keys_in[i] > limit) {
      vbemu::fail("sort_pairs: key %llu of pair %d has bits above end_bit %d; the radix sort "
                  "would ignore them",
                  static_cast<unsigned long long>(keys_in[i]), i, end_bit);
    }
  }
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return keys_in[a] < keys_in[b]; });
  for (int i = 0; i < n; ++i) {
    keys_out[i] = keys_in[order[i]];
    vals_out[i] = vals_in[order[i]];
  }
  return cudaSuccess;
}

}  // namespace seam
}  // namespace vbgs
