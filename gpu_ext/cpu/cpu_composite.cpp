// Compositing splat stage of seed 004's slice rasterizer (eqs. 1-2) for the CPU backend
// volbench_cpu_ext: the contract of workflow/volbench/gaussian_ops/composite.py (same function as
// its PyTorch twin and the CUDA kernels), float32 and float64.
//
// Per pixel (b, r, c), over k of order[b] (front first, -1 skipped), Gaussian g = order[b, k]:
//   q = A d0^2 + 2 Bc d0 d1 + Cc d1^2, d = (r ps_r, c ps_c) - m2[b, g]; the term is exactly 0
//   when !(q <= cutoff^2); w = min(wpeak[b, g] exp(-max(q, 0) / 2), W_MAX), W_MAX = 0.99;
//   composite: out += w T values[g], T *= 1 - w, alpha = 1 - T; additive: out += w values[g],
//   alpha += w.
//
// Tiles are image rows.  Row lists (per slice and row, the entries k of order[b] whose
// conservative cutoff box covers the row, in k ascending = front first) come from a stable
// counting sort; the forward returns them (opaque "saved" tensors) for the backward.
//  * forward: OpenMP over rows (dynamic schedule); a row walks its list front to back, each
//    Gaussian updating T and the F output rows over its chord of the row (the interval where the
//    row's quadratic q(c) can be <= cutoff^2, widened by one pixel), evaluated in whole blocks
//    of kLanes columns: branch-free fixed-length loops the compiler vectorises, every lane tested
//    against the cutoff.  One thread owns a row: bit-identical for any thread count.
//  * backward: exact.  Per row, the forward is recomputed front to back (T before each term, w,
//    the exp), then a back-to-front pass keeps one scalar per pixel,
//        R_k = sum_{j>k} w_j prod_{k<i<j}(1 - w_i) (g.v_j) - ga prod_{i>k}(1 - w_i),
//    so that dL/dw_k = T_k (g.v_k - R_k) and R_{k-1} = w_k g.v_k + (1 - w_k) R_k: no division
//    (T_final may underflow in float32 under many opaque layers; nothing is recovered from it).
//    The per-(slice, Gaussian) and per-Gaussian gradients are summed per chord (in fixed lanes,
//    then in double) and added to per-thread double buffers; rows go to threads round-robin (a
//    static schedule) and the buffers are reduced in thread order, so the gradients are
//    bit-identical from run to run for a fixed thread count.
#include "cpu_composite.h"

#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr double kWMax = 0.99;

// exp(-m / 2), m >= 0: float: the polynomial of cpu_backend.cpp (Cody-Waite reduction by ln 2,
// degree-7 Taylor polynomial, within 1e-7 relative of the correctly rounded value), here with m
// clamped to [0, 80] (callers use m <= cutoff^2); branch-free so that the pixel loops vectorise.
// double: std::exp.
inline float exp_neg_half(float m) {
  const float mp = m > 0.0f ? m : 0.0f;
  const float x = -0.5f * (mp < 80.0f ? mp : 80.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float t = x * 1.44269504088896341f + magic;
  const float n = t - magic;  // round(x / ln 2)
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double exp_neg_half(double m) { return std::exp(-0.5 * m); }

// The chord of a row: indices [*lo, *hi] within [lo0, hi0] where qc + 2 qb t + qa t^2 can be
// <= c2, widened by one index on each side (as cpu_backend.cpp's chord()).  False: none.
inline bool chord(double qa, double qb, double qc, double c2, int lo0, int hi0, int* lo, int* hi) {
  if (lo0 > hi0) return false;
  if (!(qa > 0.0) || !std::isfinite(qa) || !std::isfinite(qb) || !std::isfinite(qc)) {
    *lo = lo0, *hi = hi0;  // degenerate: test every pixel
    return true;
  }
  const double disc = qb * qb - qa * (qc - c2);
  const double tol = 1e-6 * (qb * qb + std::fabs(qa * (qc - c2))) + 1e-12;
  if (disc < -tol) return false;
  const double s = std::sqrt(std::max(disc, 0.0));
  const double tlo = std::floor((-qb - s) / qa) - 1.0, thi = std::ceil((-qb + s) / qa) + 1.0;
  *lo = tlo > lo0 ? static_cast<int>(std::min<double>(tlo, hi0 + 1.0)) : lo0;
  *hi = thi < hi0 ? static_cast<int>(std::max<double>(thi, lo0 - 1.0)) : hi0;
  return *lo <= *hi;
}

template <typename T>
struct Ctx {
  int64_t B, N, H, W, F;
  T psr, psc, c2;
  double cut;
  bool additive;
  const T* m2;
  const T* conic;
  const T* wp;
  const T* vals;
  const int64_t* order;
};

// A Gaussian's quantities on a row r: chord [lo, hi] in columns, d0, and its parameters.
template <typename T>
struct RowItem {
  T ma, mb, A, Bc, Cc, wp, d0;
  int64_t g, i;  // Gaussian id, (slice, Gaussian) row index b*N + g
  int lo, hi;
};

template <typename T>
inline bool row_item(const Ctx<T>& c, int64_t b, int r, int64_t k, RowItem<T>* it) {
  const int64_t g = c.order[b * c.N + k];
  const int64_t i = b * c.N + g;
  it->g = g, it->i = i;
  it->ma = c.m2[2 * i], it->mb = c.m2[2 * i + 1];
  it->A = c.conic[3 * i], it->Bc = c.conic[3 * i + 1], it->Cc = c.conic[3 * i + 2];
  it->wp = c.wp[i];
  it->d0 = static_cast<T>(r) * c.psr - it->ma;
  // q(col) = A d0^2 + 2 Bc d0 d1 + Cc d1^2, d1 = col ps_c - mb
  const double D = it->d0, P = c.psc, M = it->mb;
  const double qa = double(it->Cc) * P * P;
  const double qb = (double(it->Bc) * D - double(it->Cc) * M) * P;
  const double qc = double(it->A) * D * D - 2.0 * double(it->Bc) * D * M + double(it->Cc) * M * M;
  return chord(qa, qb, qc, double(c.c2), 0, static_cast<int>(c.W) - 1, &it->lo, &it->hi);
}

// Conservative row range of entry (b, k) (empty: *r1 < *r0): the rows of the cutoff ellipse
// widened by one, all rows when the conic is not positive definite, none when not finite.
template <typename T>
void row_box(const Ctx<T>& c, int64_t b, int64_t k, int* r0, int* r1) {
  *r0 = 1, *r1 = 0;
  const int64_t g = c.order[b * c.N + k];
  if (g < 0) return;
  const int64_t i = b * c.N + g;
  const double A = c.conic[3 * i], Bc = c.conic[3 * i + 1], Cc = c.conic[3 * i + 2];
  const double ma = c.m2[2 * i], mb = c.m2[2 * i + 1];
  if (!(std::isfinite(A) && std::isfinite(Bc) && std::isfinite(Cc) && std::isfinite(ma) &&
        std::isfinite(mb)))
    return;  // q is not finite anywhere: no term
  const double det = A * Cc - Bc * Bc;
  const double last = static_cast<double>(c.H - 1);
  if (det > 0.0 && A > 0.0) {
    const double half = c.cut * std::sqrt(Cc / det) / double(c.psr);
    const double ctr = ma / double(c.psr);
    const double lo = std::max(std::floor(ctr - half) - 1.0, 0.0);
    const double hi = std::min(std::ceil(ctr + half) + 1.0, last);
    if (!(lo <= hi)) return;
    *r0 = static_cast<int>(lo), *r1 = static_cast<int>(hi);
  } else {
    *r0 = 0, *r1 = static_cast<int>(c.H - 1);
  }
}

// Row lists: start (B*H + 1), ids (entries k of order[b], ascending within each row).
template <typename T>
void build_lists(const Ctx<T>& c, torch::Tensor* start_t, torch::Tensor* ids_t) {
  const int64_t B = c.B, N = c.N, H = c.H, nkeys = B * H;
  *start_t = torch::zeros({nkeys + 1}, torch::kInt64);
  int64_t* start = start_t->data_ptr<int64_t>();
  std::vector<int> box(2 * B * N);
#pragma omp parallel for schedule(static) num_threads(std::max(1, at::get_num_threads()))
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t k = 0; k < N; ++k) {
      int* bx = box.data() + 2 * (b * N + k);
      row_box(c, b, k, &bx[0], &bx[1]);
      for (int r = bx[0]; r <= bx[1]; ++r) ++start[b * H + r + 1];
    }
  }
  for (int64_t key = 0; key < nkeys; ++key) start[key + 1] += start[key];
  *ids_t = torch::empty({start[nkeys]}, torch::kInt32);
  int32_t* ids = ids_t->data_ptr<int32_t>();
#pragma omp parallel for schedule(static) num_threads(std::max(1, at::get_num_threads()))
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> pos(start + b * H, start + (b + 1) * H);
    for (int64_t k = 0; k < N; ++k) {
      const int* bx = box.data() + 2 * (b * N + k);
      for (int r = bx[0]; r <= bx[1]; ++r) ids[pos[r]++] = static_cast<int32_t>(k);
    }
  }
}

// ------------------------------------------------------------------ forward
// Row buffers are padded to whole blocks of kLanes columns; a chord [lo, hi] is evaluated over
// the blocks that hold it, in fixed-length loops (no remainder: vectorised whole), every lane
// masked by its own test q <= cutoff^2 (lanes outside the chord fail it, as they would in the
// twin; lanes past the image edge land in the padding and are discarded).
constexpr int kLanes = 8;

inline int64_t padded(int64_t W) { return (W + kLanes - 1) / kLanes * kLanes; }

template <typename T, bool additive>
void forward_impl(const Ctx<T>& c, const int64_t* start, const int32_t* ids, T* out, T* alpha) {
  const int64_t H = c.H, W = c.W, F = c.F, nkeys = c.B * c.H, Wp = padded(W);
  const T c2 = c.c2, psc = c.psc, wmax = static_cast<T>(kWMax);
#pragma omp parallel num_threads(std::max(1, at::get_num_threads()))
  {
    std::vector<T> Tv(Wp), av(Wp), accv(F * Wp);
#pragma omp for schedule(dynamic, 2)
    for (int64_t key = 0; key < nkeys; ++key) {
      if (start[key] == start[key + 1]) continue;
      const int64_t b = key / H;
      const int r = static_cast<int>(key % H);
      T* __restrict__ Tr = Tv.data();
      T* __restrict__ ar = av.data();
      T* __restrict__ acc = accv.data();
      std::fill(Tv.begin(), Tv.end(), T(1));
      std::fill(av.begin(), av.end(), T(0));
      std::fill(accv.begin(), accv.end(), T(0));
      for (int64_t j = start[key]; j < start[key + 1]; ++j) {
        RowItem<T> it;
        if (!row_item(c, b, r, ids[j], &it)) continue;
        const T A = it.A, Bc2 = T(2) * it.Bc, Cc = it.Cc, d0 = it.d0, mb = it.mb, wp = it.wp;
        const T qd0 = A * d0 * d0;
        const T* vg = c.vals + it.g * F;
        for (int base = it.lo / kLanes * kLanes; base <= it.hi; base += kLanes) {
          T cb[kLanes];
          for (int l = 0; l < kLanes; ++l) {
            const T d1 = static_cast<T>(base + l) * psc - mb;
            const T q = qd0 + Bc2 * d0 * d1 + Cc * d1 * d1;
            const T wr = wp * exp_neg_half(q > T(0) ? q : T(0));
            const T w = q <= c2 ? (wr < wmax ? wr : wmax) : T(0);
            if constexpr (additive) {
              cb[l] = w;
              ar[base + l] += w;
            } else {
              cb[l] = w * Tr[base + l];
              Tr[base + l] *= T(1) - w;
            }
          }
          for (int64_t f = 0; f < F; ++f) {
            const T v = vg[f];
            T* __restrict__ a = acc + f * Wp + base;
            for (int l = 0; l < kLanes; ++l) a[l] += cb[l] * v;
          }
        }
      }
      for (int64_t f = 0; f < F; ++f)
        std::copy(acc + f * Wp, acc + f * Wp + W, out + ((b * F + f) * H + r) * W);
      T* __restrict__ arow = alpha + key * W;
      if constexpr (additive)
        std::copy(ar, ar + W, arow);
      else
        for (int64_t col = 0; col < W; ++col) arow[col] = T(1) - Tr[col];
    }
  }
}

// ------------------------------------------------------------------ backward
// Per-thread buffer layout: (B*N) x 6 (dL/dm2 (2), dL/dconic (3), dL/dwpeak), then N x F.
// Per chord, the lanes keep T-typed partial sums of dL/dq, dL/dq d1, dL/dq d1^2, dL/dwpeak and
// w T g_f (fixed lanes: deterministic), combined in double at the end of the chord.
template <typename T, bool additive>
void backward_impl(const Ctx<T>& c, const int64_t* start, const int32_t* ids, const T* go,
                   const T* ga, T* g_m2, T* g_conic, T* g_wp, T* g_vals) {
  const int64_t B = c.B, N = c.N, H = c.H, W = c.W, F = c.F, nkeys = B * H, Wp = padded(W);
  const int64_t stride = B * N * 6 + N * F;
  const int nt = std::max(1, at::get_num_threads());
  std::vector<double> buf(static_cast<size_t>(nt) * stride, 0.0);
  const T c2 = c.c2, psc = c.psc, wmax = static_cast<T>(kWMax);

#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    double* gp = buf.data() + static_cast<size_t>(tid) * stride;
    double* gvb = gp + B * N * 6;
    std::vector<RowItem<T>> items;
    std::vector<int64_t> offs;
    std::vector<T> Tb, Wb, Eb;  // per (entry, lane): T before, w, exp (< 0: no term)
    std::vector<T> Tv(Wp), Rv(Wp), gov(F * Wp), gav(Wp), svv(F * kLanes);
    // rows round-robin over the team: a fixed assignment for a fixed thread count
    for (int64_t key = tid; key < nkeys; key += nth) {
      if (start[key] == start[key + 1]) continue;
      const int64_t b = key / H;
      const int r = static_cast<int>(key % H);
      items.clear();
      offs.clear();
      int64_t total = 0;
      for (int64_t j = start[key]; j < start[key + 1]; ++j) {
        RowItem<T> it;
        if (!row_item(c, b, r, ids[j], &it)) continue;
        it.lo = it.lo / kLanes * kLanes;  // from here on: the first lane of the first block
        items.push_back(it);
        offs.push_back(total);
        total += (it.hi - it.lo) / kLanes * kLanes + kLanes;
      }
      if (items.empty()) continue;
      // upstream gradients of the row, zero-padded
      T* __restrict__ gor = gov.data();
      T* __restrict__ gar = gav.data();
      for (int64_t f = 0; f < F; ++f) {
        const T* src = go + ((b * F + f) * H + r) * W;
        std::copy(src, src + W, gor + f * Wp);
        std::fill(gor + f * Wp + W, gor + (f + 1) * Wp, T(0));
      }
      std::copy(ga + key * W, ga + key * W + W, gar);
      std::fill(gar + W, gar + Wp, T(0));
      T* __restrict__ Rr = Rv.data();
      if constexpr (!additive) {
        // pass 1: the forward, front to back, keeping T before each term, w and the exp
        if (static_cast<int64_t>(Tb.size()) < total)
          Tb.resize(total), Wb.resize(total), Eb.resize(total);
        std::fill(Tv.begin(), Tv.end(), T(1));
        T* __restrict__ Tr = Tv.data();
        for (size_t n = 0; n < items.size(); ++n) {
          const RowItem<T>& it = items[n];
          const T A = it.A, Bc2 = T(2) * it.Bc, Cc = it.Cc, d0 = it.d0, mb = it.mb, wp = it.wp;
          const T qd0 = A * d0 * d0;
          T* __restrict__ tb = Tb.data() + offs[n] - it.lo;
          T* __restrict__ wb = Wb.data() + offs[n] - it.lo;
          T* __restrict__ eb = Eb.data() + offs[n] - it.lo;
          for (int base = it.lo; base <= it.hi; base += kLanes) {
            for (int l = 0; l < kLanes; ++l) {
              const int col = base + l;
              const T d1 = static_cast<T>(col) * psc - mb;
              const T q = qd0 + Bc2 * d0 * d1 + Cc * d1 * d1;
              const T e = exp_neg_half(q > T(0) ? q : T(0));
              const T wr = wp * e;
              const bool in = q <= c2;
              const T w = in ? (wr < wmax ? wr : wmax) : T(0);
              tb[col] = Tr[col];
              wb[col] = w;
              eb[col] = in ? e : T(-1);
              Tr[col] *= T(1) - w;
            }
          }
        }
        for (int64_t col = 0; col < Wp; ++col) Rr[col] = -gar[col];
      }
      // pass 2: back to front (composite; the order does not matter for additive)
      for (size_t n = items.size(); n-- > 0;) {
        const RowItem<T>& it = items[n];
        const T A = it.A, Bc = it.Bc, Bc2 = T(2) * it.Bc, Cc = it.Cc, d0 = it.d0, mb = it.mb,
                wp = it.wp;
        const T qd0 = A * d0 * d0;
        const T* vg = c.vals + it.g * F;
        T sq[kLanes] = {}, sqd[kLanes] = {}, sqdd[kLanes] = {}, sw[kLanes] = {};
        T* __restrict__ sv = svv.data();
        std::fill(svv.begin(), svv.end(), T(0));
        const T* tb = additive ? nullptr : Tb.data() + offs[n] - it.lo;
        const T* wb = additive ? nullptr : Wb.data() + offs[n] - it.lo;
        const T* eb = additive ? nullptr : Eb.data() + offs[n] - it.lo;
        for (int base = it.lo; base <= it.hi; base += kLanes) {
          T gv[kLanes] = {}, wt[kLanes];
          for (int64_t f = 0; f < F; ++f) {
            const T v = vg[f];
            const T* g = gor + f * Wp + base;
            for (int l = 0; l < kLanes; ++l) gv[l] += g[l] * v;
          }
          for (int l = 0; l < kLanes; ++l) {
            const int col = base + l;
            const T d1 = static_cast<T>(col) * psc - mb;
            const T q = qd0 + Bc2 * d0 * d1 + Cc * d1 * d1;
            T e, w, dwl;
            bool in;
            if constexpr (additive) {
              e = exp_neg_half(q > T(0) ? q : T(0));
              in = q <= c2;
              const T wr = wp * e;
              w = in ? (wr < wmax ? wr : wmax) : T(0);
              dwl = gv[l] + gar[col];
              wt[l] = w;
            } else {
              e = eb[col];
              w = wb[col];
              in = e >= T(0);
              const T Tk = tb[col];
              dwl = Tk * (gv[l] - Rr[col]);
              const T gvm = in ? gv[l] : T(0);  // no term: R unchanged (w = 0), even for inf g
              Rr[col] = w * gvm + (T(1) - w) * Rr[col];
              wt[l] = w * Tk;
            }
            const bool pass = in & (wp * e <= wmax);  // & (not &&): no branch in the lane loop
            const T g1 = pass ? dwl * e : T(0);      // dL/dwpeak
            const T gq = q >= T(0) ? T(-0.5) * g1 * wp : T(0);     // dL/dq
            sw[l] += g1;
            sq[l] += gq;
            sqd[l] += gq * d1;
            sqdd[l] += gq * d1 * d1;
          }
          for (int64_t f = 0; f < F; ++f) {
            const T* g = gor + f * Wp + base;
            T* s = sv + f * kLanes;
            for (int l = 0; l < kLanes; ++l) s[l] += wt[l] * g[l];
          }
        }
        double Sq = 0, Sqd = 0, Sqdd = 0, Sw = 0;
        for (int l = 0; l < kLanes; ++l) Sq += sq[l], Sqd += sqd[l], Sqdd += sqdd[l], Sw += sw[l];
        const double D0 = d0;
        double* gpi = gp + 6 * it.i;
        gpi[0] -= 2.0 * (double(A) * D0 * Sq + double(Bc) * Sqd);  // dq/dm2 = -dq/dd
        gpi[1] -= 2.0 * (double(Bc) * D0 * Sq + double(Cc) * Sqd);
        gpi[2] += D0 * D0 * Sq;
        gpi[3] += 2.0 * D0 * Sqd;
        gpi[4] += Sqdd;
        gpi[5] += Sw;
        double* gvi = gvb + it.g * F;
        for (int64_t f = 0; f < F; ++f) {
          double a = 0.0;
          for (int l = 0; l < kLanes; ++l) a += sv[f * kLanes + l];
          gvi[f] += a;
        }
      }
    }
  }
  // reduce the per-thread buffers in thread order
  const int64_t BN = B * N;
  at::parallel_for(0, BN, 4096, [&](int64_t s0, int64_t s1) {
    for (int64_t i = s0; i < s1; ++i) {
      double a[6] = {0, 0, 0, 0, 0, 0};
      for (int t = 0; t < nt; ++t) {
        const double* p = buf.data() + static_cast<size_t>(t) * stride + 6 * i;
        for (int v = 0; v < 6; ++v) a[v] += p[v];
      }
      g_m2[2 * i] = static_cast<T>(a[0]);
      g_m2[2 * i + 1] = static_cast<T>(a[1]);
      for (int v = 0; v < 3; ++v) g_conic[3 * i + v] = static_cast<T>(a[2 + v]);
      g_wp[i] = static_cast<T>(a[5]);
    }
  });
  at::parallel_for(0, N * F, 4096, [&](int64_t s0, int64_t s1) {
    for (int64_t i = s0; i < s1; ++i) {
      double a = 0.0;
      for (int t = 0; t < nt; ++t) a += buf[static_cast<size_t>(t) * stride + BN * 6 + i];
      g_vals[i] = static_cast<T>(a);
    }
  });
}

// ------------------------------------------------------------------ checks and bindings
void check_t(const torch::Tensor& t, const char* name, at::ScalarType dt,
             std::vector<int64_t> shape) {
  TORCH_CHECK(t.device().is_cpu(), "volbench_cpu_ext composite: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == dt, "volbench_cpu_ext composite: ", name, " must have dtype ",
              dt);
  TORCH_CHECK(t.is_contiguous(), "volbench_cpu_ext composite: ", name, " must be contiguous");
  TORCH_CHECK(t.sizes() == at::IntArrayRef(shape), "volbench_cpu_ext composite: ", name,
              " has shape ", t.sizes(), ", expected ", at::IntArrayRef(shape));
}

template <typename T>
Ctx<T> make_ctx(const torch::Tensor& m2, const torch::Tensor& conic, const torch::Tensor& wpeak,
                const torch::Tensor& order, const torch::Tensor& values, int64_t H, int64_t W,
                double ps_r, double ps_c, double cutoff, bool additive) {
  Ctx<T> c;
  c.B = m2.size(0), c.N = m2.size(1), c.H = H, c.W = W, c.F = values.size(1);
  c.psr = static_cast<T>(ps_r), c.psc = static_cast<T>(ps_c);
  c.c2 = static_cast<T>(cutoff * cutoff);
  c.cut = cutoff;
  c.additive = additive;
  c.m2 = m2.data_ptr<T>(), c.conic = conic.data_ptr<T>(), c.wp = wpeak.data_ptr<T>();
  c.vals = values.data_ptr<T>(), c.order = order.data_ptr<int64_t>();
  return c;
}

void check_all(const torch::Tensor& m2, const torch::Tensor& conic, const torch::Tensor& wpeak,
               const torch::Tensor& order, const torch::Tensor& values, int64_t H, int64_t W,
               double ps_r, double ps_c, double cutoff) {
  TORCH_CHECK(m2.dim() == 3 && values.dim() == 2, "volbench_cpu_ext composite: m2 (B,N,2), "
              "values (N,F)");
  const auto dt = m2.scalar_type();
  TORCH_CHECK(dt == torch::kFloat32 || dt == torch::kFloat64,
              "volbench_cpu_ext composite: float32 or float64 tensors");
  const int64_t B = m2.size(0), N = m2.size(1), F = values.size(1);
  check_t(m2, "m2", dt, {B, N, 2});
  check_t(conic, "conic", dt, {B, N, 3});
  check_t(wpeak, "wpeak", dt, {B, N});
  check_t(order, "order", torch::kInt64, {B, N});
  check_t(values, "values", dt, {N, F});
  TORCH_CHECK(H >= 0 && W >= 0 && H < (1LL << 30) && W < (1LL << 30) && B * N < (1LL << 31),
              "volbench_cpu_ext composite: bad geometry");
  TORCH_CHECK(ps_r > 0 && ps_c > 0 && cutoff >= 0,
              "volbench_cpu_ext composite: pixel sizes > 0, cutoff >= 0");
  const int64_t* o = order.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * N; ++i)
    TORCH_CHECK(o[i] >= -1 && o[i] < N, "volbench_cpu_ext composite: order entries in [-1, N)");
}

}  // namespace

namespace vbcomp {

std::vector<torch::Tensor> composite_fwd(torch::Tensor m2, torch::Tensor conic,
                                         torch::Tensor wpeak, torch::Tensor order,
                                         torch::Tensor values, int64_t H, int64_t W, double ps_r,
                                         double ps_c, double cutoff, bool additive) {
  check_all(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff);
  const int64_t B = m2.size(0), F = values.size(1);
  auto out = torch::zeros({B, F, H, W}, m2.options());
  auto alpha = torch::zeros({B, H, W}, m2.options());
  torch::Tensor start, ids;
  AT_DISPATCH_FLOATING_TYPES(m2.scalar_type(), "composite_fwd", [&] {
    auto c = make_ctx<scalar_t>(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff,
                                additive);
    build_lists(c, &start, &ids);
    auto* fwd = additive ? &forward_impl<scalar_t, true> : &forward_impl<scalar_t, false>;
    fwd(c, start.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), out.data_ptr<scalar_t>(),
        alpha.data_ptr<scalar_t>());
  });
  return {out, alpha, start, ids};
}

std::vector<torch::Tensor> composite_bwd(torch::Tensor m2, torch::Tensor conic,
                                         torch::Tensor wpeak, torch::Tensor order,
                                         torch::Tensor values, int64_t H, int64_t W, double ps_r,
                                         double ps_c, double cutoff, bool additive,
                                         std::vector<torch::Tensor> saved,
                                         torch::Tensor grad_out, torch::Tensor grad_alpha) {
  check_all(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff);
  const auto dt = m2.scalar_type();
  const int64_t B = m2.size(0), F = values.size(1);
  check_t(grad_out, "grad_out", dt, {B, F, H, W});
  check_t(grad_alpha, "grad_alpha", dt, {B, H, W});
  auto g_m2 = torch::zeros_like(m2);
  auto g_conic = torch::zeros_like(conic);
  auto g_wp = torch::zeros_like(wpeak);
  auto g_vals = torch::zeros_like(values);
  AT_DISPATCH_FLOATING_TYPES(dt, "composite_bwd", [&] {
    auto c = make_ctx<scalar_t>(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff,
                                additive);
    torch::Tensor start, ids;
    if (saved.size() == 2 && saved[0].scalar_type() == torch::kInt64 &&
        saved[0].numel() == B * H + 1 && saved[1].scalar_type() == torch::kInt32 &&
        saved[0].is_contiguous() && saved[1].is_contiguous() &&
        saved[1].numel() == saved[0].data_ptr<int64_t>()[B * H]) {
      start = saved[0], ids = saved[1];
    } else {
      build_lists(c, &start, &ids);
    }
    auto* bwd = additive ? &backward_impl<scalar_t, true> : &backward_impl<scalar_t, false>;
    bwd(c, start.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), grad_out.data_ptr<scalar_t>(),
        grad_alpha.data_ptr<scalar_t>(), g_m2.data_ptr<scalar_t>(), g_conic.data_ptr<scalar_t>(),
        g_wp.data_ptr<scalar_t>(), g_vals.data_ptr<scalar_t>());
  });
  return {g_m2, g_conic, g_wp, g_vals};
}

}  // namespace vbcomp
