// Driver of the CPU execution harness: runs the gpu_ext kernels (compiled from gpu_ext/csrc as
// C++ with the shim) the way bindings.cpp does, on raw files, without torch.
//
//   vbemu vox_fwd DIR | vox_bwd DIR | ras_fwd DIR | ras_bwd DIR | comp_fwd DIR | comp_bwd DIR
//       inputs DIR/<name>.bin (raw little-endian arrays) and DIR/params.txt ("key v1 v2 ..."
//       lines); outputs DIR/<name>.bin.  Same checks, allocation and call order as bindings.cpp;
//       buffers torch would leave uninitialised (torch::empty) are filled with 0xff bytes
//       (NaN / -1), and every buffer ends at a guard page (outside AddressSanitizer builds), so a
//       read past its end faults.
//   vbemu bigindex      the kernels on Gaussian indices up to 2^31 - 2 (arrays mapped lazily,
//                       only the touched pages exist), against a brute-force double reference
//   vbemu pairlimit     more than 2^31 (tile, item) pairs must be refused before allocating them
//   vbemu selftest NAME the runtime's own checks (selftest.cpp)
// Exit status: 0 ok, 1 a check failed, 2 an exception (the message of the C++ code), 86 a
// runtime failure (vbemu: FAIL ...).
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.h"
#include "emu_control.h"

int run_selftest(const std::string& name);  // selftest.cpp

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kGuarded = false;  // ASan's redzones do the job
#else
constexpr bool kGuarded = true;
#endif

size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// "device" allocation: the buffer ends at a PROT_NONE page; fill < 0: uninitialised
void* dev_alloc(size_t bytes, int fill) {
  if (bytes == 0) bytes = 1;
  void* p;
  if (kGuarded) {
    const size_t pg = page_size(), span = (bytes + pg - 1) / pg * pg;
    void* mem = mmap(nullptr, span + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("dev_alloc: mmap failed");
    if (mprotect(static_cast<char*>(mem) + span, pg, PROT_NONE) != 0)
      throw std::runtime_error("dev_alloc: mprotect failed");
    p = static_cast<char*>(mem) + (span - bytes);
  } else {
    p = std::malloc(bytes);
    if (!p) throw std::runtime_error("dev_alloc: out of memory");
  }
  if (fill >= 0) std::memset(p, fill, bytes);
  return p;
}

// lazily mapped zeros (pages exist once touched), for arrays of 2^31 elements
void* lazy_alloc(size_t bytes) {
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::runtime_error("lazy_alloc: mmap failed");
  return mem;
}

struct Params {
  std::map<std::string, std::vector<double>> kv;
  const std::vector<double>& get(const std::string& k, size_t n) const {
    auto it = kv.find(k);
    if (it == kv.end() || it->second.size() != n)
      throw std::runtime_error("params.txt: need " + std::to_string(n) + " value(s) for " + k);
    return it->second;
  }
};

Params read_params(const std::string& dir) {
  std::ifstream f(dir + "/params.txt");
  if (!f) throw std::runtime_error("cannot read " + dir + "/params.txt");
  Params p;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string key;
    if (!(ss >> key)) continue;
    std::vector<double> v;
    std::string tok;
    while (ss >> tok) v.push_back(std::strtod(tok.c_str(), nullptr));  // inf, nan accepted
    p.kv[key] = v;
  }
  return p;
}

template <class T>
struct Arr {
  T* p = nullptr;
  size_t n = 0;
};

template <class T>
Arr<T> read_arr(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/" + name + ".bin";
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw std::runtime_error("missing " + path);
  const size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes % sizeof(T)) throw std::runtime_error(path + ": size not a multiple of the element");
  Arr<T> a;
  a.n = bytes / sizeof(T);
  a.p = static_cast<T*>(dev_alloc(bytes, -1));
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f || (bytes && std::fread(a.p, 1, bytes, f) != bytes))
    throw std::runtime_error("cannot read " + path);
  std::fclose(f);
  return a;
}

template <class T>
void write_arr(const std::string& dir, const std::string& name, const T* p, size_t n) {
  const std::string path = dir + "/" + name + ".bin";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (n && std::fwrite(p, sizeof(T), n, f) != n))
    throw std::runtime_error("cannot write " + path);
  std::fclose(f);
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("volbench_gpu_ext: " + what);
}

// the allocation callback of bindings.cpp (Buffers): slot 1 the ids, slot 2 the ranges
struct TileBuffers {
  void* ids = nullptr;
  size_t ids_bytes = 0;
  void* ranges = nullptr;
  size_t ranges_bytes = 0;
  vbgs::AllocFn fn() {
    return [this](size_t bytes, int slot) -> void* {
      void* p = dev_alloc(bytes, 0xff);
      if (slot == 1) ids = p, ids_bytes = bytes;
      if (slot == 2) ranges = p, ranges_bytes = bytes;
      return p;
    };
  }
};

// ---------------------------------------------------------------------------- voxelizer

vbgs::VoxGeom vox_geom(const Params& P) {
  const auto& sh = P.get("shape", 3);
  const int64_t shape[3] = {static_cast<int64_t>(sh[0]), static_cast<int64_t>(sh[1]),
                            static_cast<int64_t>(sh[2])};
  return vbgs::make_vox_geom(P.get("origin", 3).data(), P.get("spacing", 3).data(), shape,
                             P.get("cutoff", 1)[0]);
}

int vox_fwd(const std::string& d) {
  const Params P = read_params(d);
  const auto means = read_arr<float>(d, "means"), A = read_arr<float>(d, "A"),
             amps = read_arr<float>(d, "amps"), half = read_arr<float>(d, "half_ext");
  const int64_t n = static_cast<int64_t>(amps.n);
  require(means.n == 3 * amps.n && A.n == 9 * amps.n && half.n == 3 * amps.n,
          "inconsistent numbers of Gaussians");
  require(n < (1LL << 31), "too many Gaussians");
  const vbgs::VoxGeom g = vox_geom(P);
  const int64_t n_tiles = static_cast<int64_t>(g.tiles[0]) * g.tiles[1] * g.tiles[2];
  const int64_t nvox = static_cast<int64_t>(g.shape[0]) * g.shape[1] * g.shape[2];
  const bool runs = n > 0 && n_tiles > 0;
  auto* out = static_cast<float*>(dev_alloc(sizeof(float) * nvox, runs ? 0xff : 0));
  auto* boxes = static_cast<int*>(dev_alloc(sizeof(int) * 6 * (n > 0 ? n : 1), 0xff));
  vbgs::voxel_tile_boxes(means.p, half.p, static_cast<int>(n), g, boxes, nullptr);
  TileBuffers tb;
  int32_t* ids = nullptr;
  int64_t* ranges = nullptr;
  vbgs::build_tile_lists(boxes, nullptr, static_cast<int>(n), g.tiles[0], g.tiles[1], g.tiles[2],
                         n_tiles, tb.fn(), nullptr, &ids, &ranges);
  if (runs) vbgs::voxelize_forward(means.p, A.p, amps.p, ids, ranges, g, out, nullptr);
  write_arr(d, "out", out, nvox);
  write_arr(d, "ids", ids, tb.ids_bytes / 4);
  write_arr(d, "ranges", ranges, tb.ranges_bytes / 8);
  write_arr(d, "boxes", boxes, 6 * n);
  return 0;
}

int vox_bwd(const std::string& d) {
  const Params P = read_params(d);
  const auto go = read_arr<float>(d, "grad_out"), means = read_arr<float>(d, "means"),
             A = read_arr<float>(d, "A"), amps = read_arr<float>(d, "amps");
  const auto ids = read_arr<int32_t>(d, "ids");
  const auto ranges = read_arr<int64_t>(d, "ranges");
  const int64_t n = static_cast<int64_t>(amps.n);
  require(means.n == 3 * amps.n && A.n == 9 * amps.n, "inconsistent numbers of Gaussians");
  const vbgs::VoxGeom g = vox_geom(P);
  const int64_t n_tiles = static_cast<int64_t>(g.tiles[0]) * g.tiles[1] * g.tiles[2];
  require(go.n == static_cast<size_t>(g.shape[0]) * g.shape[1] * g.shape[2],
          "grad_out must have the ROI shape");
  require(static_cast<int64_t>(ranges.n) >= 2 * n_tiles, "tile ranges do not match the ROI");
  auto* gm = static_cast<float*>(dev_alloc(sizeof(float) * 3 * n, 0));
  auto* gA = static_cast<float*>(dev_alloc(sizeof(float) * 9 * n, 0));
  auto* ga = static_cast<float*>(dev_alloc(sizeof(float) * n, 0));
  if (n > 0 && n_tiles > 0)
    vbgs::voxelize_backward(go.p, means.p, A.p, amps.p, ids.p, ranges.p, g, gm, gA, ga, nullptr);
  write_arr(d, "g_means", gm, 3 * n);
  write_arr(d, "g_A", gA, 9 * n);
  write_arr(d, "g_amps", ga, n);
  return 0;
}

// ---------------------------------------------------------------------------- rasterizer

vbgs::PixGeom pix_geom(const Params& P) {
  auto i64 = [&](const char* k) { return static_cast<int64_t>(P.get(k, 1)[0]); };
  return vbgs::make_pix_geom(i64("B"), i64("N"), i64("H"), i64("W"), P.get("pixel_size", 2).data(),
                             P.get("cutoff", 1)[0]);
}

int ras_fwd(const std::string& d) {
  const Params P = read_params(d);
  const vbgs::PixGeom g = pix_geom(P);
  const auto m2 = read_arr<float>(d, "mean2d"), conic = read_arr<float>(d, "conic"),
             w = read_arr<float>(d, "weight"), radii = read_arr<float>(d, "radii");
  const int64_t items = static_cast<int64_t>(g.B) * g.N;
  require(static_cast<int64_t>(w.n) == items && m2.n == 2 * w.n && conic.n == 3 * w.n &&
              radii.n == 2 * w.n,
          "footprints must have B*N rows");
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  const int64_t npx = static_cast<int64_t>(g.B) * g.H * g.W;
  const bool runs = items > 0 && n_keys > 0;
  auto* out = static_cast<float*>(dev_alloc(sizeof(float) * npx, runs ? 0xff : 0));
  auto* boxes = static_cast<int*>(dev_alloc(sizeof(int) * 6 * (items > 0 ? items : 1), 0xff));
  auto* key_base = static_cast<int64_t*>(dev_alloc(sizeof(int64_t) * (items > 0 ? items : 1), 0xff));
  vbgs::raster_tile_boxes(m2.p, radii.p, g, boxes, key_base, nullptr);
  TileBuffers tb;
  int32_t* ids = nullptr;
  int64_t* ranges = nullptr;
  vbgs::build_tile_lists(boxes, key_base, static_cast<int>(items), 1, g.tiles[0], g.tiles[1],
                         n_keys, tb.fn(), nullptr, &ids, &ranges);
  if (runs) vbgs::raster_forward(m2.p, conic.p, w.p, ids, ranges, g, out, nullptr);
  write_arr(d, "out", out, npx);
  write_arr(d, "ids", ids, tb.ids_bytes / 4);
  write_arr(d, "ranges", ranges, tb.ranges_bytes / 8);
  write_arr(d, "boxes", boxes, 6 * items);
  write_arr(d, "key_base", key_base, items);
  return 0;
}

int ras_bwd(const std::string& d) {
  const Params P = read_params(d);
  const vbgs::PixGeom g = pix_geom(P);
  const auto go = read_arr<float>(d, "grad_out"), m2 = read_arr<float>(d, "mean2d"),
             conic = read_arr<float>(d, "conic"), w = read_arr<float>(d, "weight");
  const auto ids = read_arr<int32_t>(d, "ids");
  const auto ranges = read_arr<int64_t>(d, "ranges");
  const int64_t items = static_cast<int64_t>(g.B) * g.N;
  require(static_cast<int64_t>(w.n) == items && m2.n == 2 * w.n && conic.n == 3 * w.n,
          "footprints must have B*N rows");
  require(static_cast<int64_t>(go.n) == static_cast<int64_t>(g.B) * g.H * g.W,
          "grad_out must be (B, H, W)");
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  require(static_cast<int64_t>(ranges.n) >= 2 * n_keys, "tile ranges do not match the images");
  auto* gm = static_cast<float*>(dev_alloc(sizeof(float) * 2 * items, 0));
  auto* gc = static_cast<float*>(dev_alloc(sizeof(float) * 3 * items, 0));
  auto* gw = static_cast<float*>(dev_alloc(sizeof(float) * items, 0));
  if (items > 0 && n_keys > 0)
    vbgs::raster_backward(go.p, m2.p, conic.p, w.p, ids.p, ranges.p, g, gm, gc, gw, nullptr);
  write_arr(d, "g_mean2d", gm, 2 * items);
  write_arr(d, "g_conic", gc, 3 * items);
  write_arr(d, "g_weight", gw, items);
  return 0;
}

// ---------------------------------------------------------------------------- compositing

vbgs::CompGeom comp_geom(const Params& P) {
  auto i64 = [&](const char* k) { return static_cast<int64_t>(P.get(k, 1)[0]); };
  const auto& ps = P.get("pixel_size", 2);
  return vbgs::make_comp_geom(i64("B"), i64("N"), i64("H"), i64("W"), i64("F"), ps[0], ps[1],
                              P.get("cutoff", 1)[0], P.get("additive", 1)[0] != 0);
}

struct CompIn {
  Arr<float> m2, conic, wpeak, values;
  Arr<int64_t> order;
};

// the inputs and checks of bindings.cpp's comp_inputs (shapes, index range of order)
CompIn comp_inputs(const std::string& d, const vbgs::CompGeom& g) {
  CompIn in{read_arr<float>(d, "m2"), read_arr<float>(d, "conic"), read_arr<float>(d, "wpeak"),
            read_arr<float>(d, "values"), read_arr<int64_t>(d, "order")};
  const size_t items = static_cast<size_t>(g.B) * g.N;
  require(in.m2.n == 2 * items && in.conic.n == 3 * items && in.wpeak.n == items &&
              in.order.n == items && in.values.n == static_cast<size_t>(g.N) * g.F,
          "inputs do not have the shapes (B,N,2) (B,N,3) (B,N) (B,N) (N,F)");
  for (size_t i = 0; i < items; ++i)
    require(in.order.p[i] >= -1 && in.order.p[i] < g.N, "order holds an index outside [-1, N)");
  return in;
}

int comp_fwd(const std::string& d) {
  const Params P = read_params(d);
  const vbgs::CompGeom g = comp_geom(P);
  const CompIn in = comp_inputs(d, g);
  const int64_t items = static_cast<int64_t>(g.B) * g.N;
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  const int64_t npx = static_cast<int64_t>(g.B) * g.H * g.W;
  const bool runs = items > 0 && n_keys > 0;
  const int un = runs ? 0xff : 0;  // torch::empty when the kernels run, else zeros (ones)
  auto* out = static_cast<float*>(dev_alloc(sizeof(float) * npx * g.F, un));
  auto* alpha = static_cast<float*>(dev_alloc(sizeof(float) * npx, un));
  auto* t_save = static_cast<float*>(dev_alloc(sizeof(float) * npx, un));
  if (!runs)
    for (int64_t i = 0; i < npx; ++i) t_save[i] = 1.f;
  auto* n_live = static_cast<int32_t*>(dev_alloc(sizeof(int32_t) * npx, un));
  auto* boxes = static_cast<int*>(dev_alloc(sizeof(int) * 6 * (items > 0 ? items : 1), 0xff));
  auto* key_base = static_cast<int64_t*>(dev_alloc(sizeof(int64_t) * (items > 0 ? items : 1), 0xff));
  vbgs::composite_tile_boxes(in.m2.p, in.conic.p, in.order.p, g, boxes, key_base, nullptr);
  TileBuffers tb;
  int32_t* ids = nullptr;
  int64_t* ranges = nullptr;
  vbgs::build_tile_lists(boxes, key_base, static_cast<int>(items), 1, g.tiles[0], g.tiles[1],
                         n_keys, tb.fn(), nullptr, &ids, &ranges);
  if (runs)
    vbgs::composite_forward(in.m2.p, in.conic.p, in.wpeak.p, in.order.p, in.values.p, ids, ranges,
                            g, out, alpha, t_save, n_live, nullptr);
  write_arr(d, "out", out, npx * g.F);
  write_arr(d, "alpha", alpha, npx);
  write_arr(d, "t_save", t_save, npx);
  write_arr(d, "n_live", n_live, npx);
  write_arr(d, "ids", ids, tb.ids_bytes / 4);
  write_arr(d, "ranges", ranges, tb.ranges_bytes / 8);
  write_arr(d, "boxes", boxes, 6 * items);
  write_arr(d, "key_base", key_base, items);
  return 0;
}

int comp_bwd(const std::string& d) {
  const Params P = read_params(d);
  const vbgs::CompGeom g = comp_geom(P);
  const CompIn in = comp_inputs(d, g);
  const auto go = read_arr<float>(d, "grad_out"), ga = read_arr<float>(d, "grad_alpha"),
             t_save = read_arr<float>(d, "t_save");
  const auto n_live = read_arr<int32_t>(d, "n_live"), ids = read_arr<int32_t>(d, "ids");
  const auto ranges = read_arr<int64_t>(d, "ranges");
  const int64_t items = static_cast<int64_t>(g.B) * g.N;
  const int64_t n_keys = static_cast<int64_t>(g.B) * g.tiles[0] * g.tiles[1];
  const int64_t npx = static_cast<int64_t>(g.B) * g.H * g.W;
  require(static_cast<int64_t>(go.n) == npx * g.F && static_cast<int64_t>(ga.n) == npx,
          "grad_out must be (B,F,H,W) and grad_alpha (B,H,W)");
  require(static_cast<int64_t>(t_save.n) == npx && static_cast<int64_t>(n_live.n) == npx &&
              static_cast<int64_t>(ranges.n) >= 2 * n_keys,
          "saved tile lists do not match the slices");
  auto* gm = static_cast<float*>(dev_alloc(sizeof(float) * 2 * items, 0));
  auto* gc = static_cast<float*>(dev_alloc(sizeof(float) * 3 * items, 0));
  auto* gw = static_cast<float*>(dev_alloc(sizeof(float) * items, 0));
  auto* gv = static_cast<float*>(dev_alloc(sizeof(float) * g.N * g.F, 0));
  if (items > 0 && n_keys > 0)
    vbgs::composite_backward(in.m2.p, in.conic.p, in.wpeak.p, in.order.p, in.values.p, ids.p,
                             ranges.p, g, t_save.p, n_live.p, go.p, ga.p, gm, gc, gw, gv,
                             nullptr);
  write_arr(d, "g_m2", gm, 2 * items);
  write_arr(d, "g_conic", gc, 3 * items);
  write_arr(d, "g_wpeak", gw, items);
  write_arr(d, "g_values", gv, static_cast<size_t>(g.N) * g.F);
  return 0;
}

// ---------------------------------------------------------------------------- big indices

int g_failures = 0;

void check(bool ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void check(bool ok, const char* fmt, ...) {
  if (ok) return;
  ++g_failures;
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "CHECK FAILED: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
}

double rel_err(const double* a, const double* b, int n) {
  double num = 0, den = 0;
  for (int i = 0; i < n; ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num) / (std::sqrt(den) + 1e-30);
}

constexpr int64_t kMaxItems = (1LL << 31) - 1;  // what the bindings accept

// voxelizer forward + backward on one 8^3 tile whose list holds Gaussians at huge indices
void bigindex_voxelizer() {
  const int64_t n = kMaxItems;
  auto* means = static_cast<float*>(lazy_alloc(sizeof(float) * 3 * n));
  auto* A = static_cast<float*>(lazy_alloc(sizeof(float) * 9 * n));
  auto* amps = static_cast<float*>(lazy_alloc(sizeof(float) * n));
  auto* gm = static_cast<float*>(lazy_alloc(sizeof(float) * 3 * n));
  auto* gA = static_cast<float*>(lazy_alloc(sizeof(float) * 9 * n));
  auto* ga = static_cast<float*>(lazy_alloc(sizeof(float) * n));
  // above 2^31/9, 2^31/3 and near 2^31: 32-bit products 9*gi, 3*gi would wrap
  const int32_t gis[4] = {250000000, 800000000, 1500000000, static_cast<int32_t>(n - 1)};
  vbgs::VoxGeom g;
  const double o[3] = {1e4 + 0.25, -3.5, 17.0};
  for (int a = 0; a < 3; ++a) {
    g.o[a] = o[a];
    g.sp[a] = 1.0f;
    g.shape[a] = 8;
    g.tiles[a] = 1;
  }
  g.c2 = 25.0f;  // cutoff 5: terms at the cutoff are below the tolerance
  for (int k = 0; k < 4; ++k) {
    const int64_t gi = gis[k];
    const float rel[3] = {2.0f + 1.3f * k, 5.5f - 0.9f * k, 3.1f + 0.7f * k};
    for (int a = 0; a < 3; ++a) means[3 * gi + a] = static_cast<float>(o[a] + rel[a]);
    const float s = 0.6f + 0.15f * k;
    const float M[9] = {1 / s, 0.2f, 0.0f, -0.1f, 1.2f / s, 0.15f, 0.05f, 0.0f, 0.8f / s};
    for (int c = 0; c < 9; ++c) A[9 * gi + c] = M[c];
    amps[gi] = 0.5f + 0.25f * k;
  }
  std::vector<int32_t> ids_v(gis, gis + 4);
  const int64_t ranges[2] = {0, 4};
  std::vector<float> out(512, NAN), go(512);
  for (int v = 0; v < 512; ++v) go[v] = static_cast<float>(std::sin(0.37 * v) + 0.2);
  vbgs::voxelize_forward(means, A, amps, ids_v.data(), ranges, g, out.data(), nullptr);
  vbgs::voxelize_backward(go.data(), means, A, amps, ids_v.data(), ranges, g, gm, gA, ga, nullptr);
  // brute-force double reference
  std::vector<double> ref(512, 0.0), rg(13 * 4, 0.0);
  double vmax = 0;
  for (int v = 0; v < 512; ++v) {
    const int idx[3] = {v / 64, (v / 8) % 8, v % 8};
    for (int k = 0; k < 4; ++k) {
      const int64_t gi = gis[k];
      double d[3], y[3] = {0, 0, 0};
      for (int a = 0; a < 3; ++a) d[a] = (o[a] + idx[a]) - static_cast<double>(means[3 * gi + a]);
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) y[r] += A[9 * gi + 3 * r + c] * d[c];
      const double m = y[0] * y[0] + y[1] * y[1] + y[2] * y[2];
      if (m > 25.0) continue;
      const double e = std::exp(-0.5 * m);
      ref[v] += amps[gi] * e;
      const double gamp = go[v] * e, gys = -gamp * amps[gi];
      for (int c = 0; c < 3; ++c)
        for (int r = 0; r < 3; ++r) rg[13 * k + c] -= A[9 * gi + 3 * r + c] * gys * y[r];
      for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) rg[13 * k + 3 + 3 * r + c] += gys * y[r] * d[c];
      rg[13 * k + 12] += gamp;
    }
    vmax = std::fmax(vmax, ref[v]);
  }
  double worst = 0;
  for (int v = 0; v < 512; ++v) worst = std::fmax(worst, std::fabs(out[v] - ref[v]));
  check(vmax > 0.5, "voxelizer reference is empty");
  check(worst <= 1e-5 * vmax, "voxelize_forward at huge indices: max error %.3g (max %.3g)", worst,
        vmax);
  for (int k = 0; k < 4; ++k) {
    const int64_t gi = gis[k];
    double got[13];
    for (int c = 0; c < 3; ++c) got[c] = gm[3 * gi + c];
    for (int c = 0; c < 9; ++c) got[3 + c] = gA[9 * gi + c];
    got[12] = ga[gi];
    const double e = rel_err(got, &rg[13 * k], 13);
    check(e <= 1e-4, "voxelize_backward at index %lld: relative error %.3g", (long long)gi, e);
    check(ga[gi - 1] == 0.0f && gm[3 * (gi - 1)] == 0.0f,
          "voxelize_backward wrote next to index %lld", (long long)gi);
  }
}

// raster forward + backward on one 16x16 tile of one camera with N = 2^31 - 1 items
void bigindex_rasterizer() {
  const int64_t n = kMaxItems;
  auto* m2 = static_cast<float*>(lazy_alloc(sizeof(float) * 2 * n));
  auto* conic = static_cast<float*>(lazy_alloc(sizeof(float) * 3 * n));
  auto* w = static_cast<float*>(lazy_alloc(sizeof(float) * n));
  auto* gm = static_cast<float*>(lazy_alloc(sizeof(float) * 2 * n));
  auto* gc = static_cast<float*>(lazy_alloc(sizeof(float) * 3 * n));
  auto* gw = static_cast<float*>(lazy_alloc(sizeof(float) * n));
  // above 2^31/3 and 2^31/2 (32-bit products 3*gi, 2*gi wrap)
  const int32_t gis[3] = {800000000, 1100000000, static_cast<int32_t>(n - 1)};
  vbgs::PixGeom g;
  g.B = 1;
  g.N = static_cast<int>(n);
  g.H = g.W = 16;
  g.tiles[0] = g.tiles[1] = 1;
  g.ps[0] = 1.0f;
  g.ps[1] = 0.9f;
  g.c2 = 25.0f;
  for (int k = 0; k < 3; ++k) {
    const int64_t gi = gis[k];
    m2[2 * gi] = 4.0f + 3.5f * k;
    m2[2 * gi + 1] = 9.0f - 2.2f * k;
    conic[3 * gi] = 0.3f + 0.1f * k;
    conic[3 * gi + 1] = 0.05f - 0.04f * k;
    conic[3 * gi + 2] = 0.4f;
    w[gi] = 1.0f + 0.5f * k;
  }
  std::vector<int32_t> ids_v(gis, gis + 3);
  const int64_t ranges[2] = {0, 3};
  std::vector<float> out(256, NAN), go(256);
  for (int p = 0; p < 256; ++p) go[p] = static_cast<float>(std::cos(0.21 * p) + 0.3);
  vbgs::raster_forward(m2, conic, w, ids_v.data(), ranges, g, out.data(), nullptr);
  vbgs::raster_backward(go.data(), m2, conic, w, ids_v.data(), ranges, g, gm, gc, gw, nullptr);
  std::vector<double> ref(256, 0.0), rg(6 * 3, 0.0);
  double vmax = 0;
  for (int p = 0; p < 256; ++p) {
    const double pa = (p / 16) * 1.0, pb = (p % 16) * static_cast<double>(g.ps[1]);
    for (int k = 0; k < 3; ++k) {
      const int64_t gi = gis[k];
      const double da = pa - m2[2 * gi], db = pb - m2[2 * gi + 1];
      const double c0 = conic[3 * gi], c1 = conic[3 * gi + 1], c2 = conic[3 * gi + 2];
      const double mraw = c0 * da * da + 2 * c1 * da * db + c2 * db * db;
      const double m = std::fmax(mraw, 0.0);
      if (m > 25.0) continue;
      const double e = std::exp(-0.5 * m);
      ref[p] += w[gi] * e;
      const double gw_ = go[p] * e, gmm = mraw >= 0 ? -0.5 * gw_ * w[gi] : 0.0;
      rg[6 * k + 0] += -gmm * 2 * (c0 * da + c1 * db);
      rg[6 * k + 1] += -gmm * 2 * (c1 * da + c2 * db);
      rg[6 * k + 2] += gmm * da * da;
      rg[6 * k + 3] += gmm * 2 * da * db;
      rg[6 * k + 4] += gmm * db * db;
      rg[6 * k + 5] += gw_;
    }
    vmax = std::fmax(vmax, ref[p]);
  }
  double worst = 0;
  for (int p = 0; p < 256; ++p) worst = std::fmax(worst, std::fabs(out[p] - ref[p]));
  check(vmax > 0.5, "rasterizer reference is empty");
  check(worst <= 1e-5 * vmax, "raster_forward at huge indices: max error %.3g (max %.3g)", worst,
        vmax);
  for (int k = 0; k < 3; ++k) {
    const int64_t gi = gis[k];
    const double got[6] = {gm[2 * gi], gm[2 * gi + 1], gc[3 * gi], gc[3 * gi + 1], gc[3 * gi + 2],
                           gw[gi]};
    const double e = rel_err(got, &rg[6 * k], 6);
    check(e <= 1e-4, "raster_backward at index %lld: relative error %.3g", (long long)gi, e);
  }
}

// the per-item kernels (boxes, count, emit) in the last block of grids of up to 2^31 - 1 items
void bigindex_tiles() {
  // voxel boxes: only the last block of the grid runs
  {
    const int64_t n = kMaxItems;
    auto* means = static_cast<float*>(lazy_alloc(sizeof(float) * 3 * n));
    auto* half = static_cast<float*>(lazy_alloc(sizeof(float) * 3 * n));
    auto* boxes = static_cast<int*>(lazy_alloc(sizeof(int) * 6 * n));
    vbgs::VoxGeom g;
    for (int a = 0; a < 3; ++a) {
      g.o[a] = 100.0;
      g.sp[a] = 1.0f;
      g.shape[a] = 20;
      g.tiles[a] = 3;
    }
    g.c2 = 9.0f;
    const int64_t i = n - 1, j = n - 2;
    const float rel[3] = {10.3f, 4.4f, 17.6f}, h[3] = {3.0f, 5.0f, 1.0f};
    for (int a = 0; a < 3; ++a) {
      means[3 * i + a] = 100.0f + rel[a];
      half[3 * i + a] = h[a];
      means[3 * j + a] = NAN;
    }
    const unsigned grid = vbgs::blocks_for(n, 256);
    vbemu::set_block_filter(grid, grid - 1, grid);
    vbgs::voxel_tile_boxes(means, half, static_cast<int>(n), g, boxes, nullptr);
    vbemu::set_block_filter(0, 0, 0);
    const int want_i[6] = {0, 1, 0, 1, 2, 2}, want_j[6] = {1, 0, 1, 0, 1, 0};
    for (int c = 0; c < 6; ++c) {
      check(boxes[6 * i + c] == want_i[c], "voxel box of item %lld: entry %d is %d, not %d",
            (long long)i, c, boxes[6 * i + c], want_i[c]);
      check(boxes[6 * j + c] == want_j[c], "voxel box of item %lld (NaN mean): entry %d is %d",
            (long long)j, c, boxes[6 * j + c]);
    }
  }
  // raster boxes and key bases
  {
    const int64_t n = kMaxItems;
    auto* m2 = static_cast<float*>(lazy_alloc(sizeof(float) * 2 * n));
    auto* radii = static_cast<float*>(lazy_alloc(sizeof(float) * 2 * n));
    auto* boxes = static_cast<int*>(lazy_alloc(sizeof(int) * 6 * n));
    auto* kb = static_cast<int64_t*>(lazy_alloc(sizeof(int64_t) * n));
    vbgs::PixGeom g;
    g.B = 7;
    g.N = static_cast<int>(n / 7);
    g.H = g.W = 64;
    g.tiles[0] = g.tiles[1] = 4;
    g.ps[0] = g.ps[1] = 1.0f;
    g.c2 = 9.0f;
    const int64_t items = static_cast<int64_t>(g.B) * g.N, i = items - 1;
    m2[2 * i] = 20.5f;
    m2[2 * i + 1] = 40.0f;
    radii[2 * i] = 6.0f;
    radii[2 * i + 1] = 2.0f;
    const unsigned grid = vbgs::blocks_for(items, 256);
    vbemu::set_block_filter(grid, grid - 1, grid);
    vbgs::raster_tile_boxes(m2, radii, g, boxes, kb, nullptr);
    vbemu::set_block_filter(0, 0, 0);
    const int want[6] = {0, 0, 0, 1, 2, 2};
    for (int c = 0; c < 6; ++c)
      check(boxes[6 * i + c] == want[c], "raster box of item %lld: entry %d is %d, not %d",
            (long long)i, c, boxes[6 * i + c], want[c]);
    check(kb[i] == 6 * 16, "key base of item %lld is %lld", (long long)i, (long long)kb[i]);
  }
  // count + emit (6*i products) over 4e8 items: the last block holds the only non-empty boxes;
  // the scan runs over all items (lazily mapped zeros)
  {
    const int n = 400000000;
    auto* boxes = static_cast<int*>(lazy_alloc(sizeof(int) * 6 * static_cast<size_t>(n)));
    const unsigned grid = vbgs::blocks_for(n, 256);
    const int64_t first = static_cast<int64_t>(grid - 1) * 256;
    for (int64_t i = first; i < n; ++i) {
      const int empty[6] = {1, 0, 1, 0, 1, 0};
      for (int c = 0; c < 6; ++c) boxes[6 * i + c] = empty[c];
    }
    const int64_t i1 = n - 1, i2 = n - 2;
    const int b1[6] = {1, 1, 0, 0, 2, 3}, b2[6] = {0, 1, 1, 2, 0, 3};
    for (int c = 0; c < 6; ++c) boxes[6 * i1 + c] = b1[c], boxes[6 * i2 + c] = b2[c];
    const int tz = 2, ty = 3, tx = 4;
    const int64_t n_keys = tz * ty * tx;
    int32_t* ids = nullptr;
    int64_t* ranges = nullptr;
    vbemu::set_block_filter(grid, grid - 1, grid);
    const int64_t total = vbgs::build_tile_lists(
        boxes, nullptr, n, tz, ty, tx, n_keys,
        [](size_t bytes, int) { return lazy_alloc(bytes); }, nullptr, &ids, &ranges);
    vbemu::set_block_filter(0, 0, 0);
    // expected: keys of item i2 then i1 inside every tile (stable by item)
    std::vector<std::vector<int64_t>> lists(n_keys);
    for (int64_t it : {i2, i1}) {
      const int* b = boxes + 6 * it;
      for (int z = b[0]; z <= b[1]; ++z)
        for (int y = b[2]; y <= b[3]; ++y)
          for (int x = b[4]; x <= b[5]; ++x) lists[(z * ty + y) * tx + x].push_back(it);
    }
    check(total == 18, "tile lists over 4e8 items: %lld pairs, not 18", (long long)total);
    int64_t pos = 0;
    for (int64_t k = 0; k < n_keys && total == 18; ++k) {
      const int64_t cnt = static_cast<int64_t>(lists[k].size());
      if (cnt) {
        check(ranges[2 * k] == pos && ranges[2 * k + 1] == pos + cnt,
              "tile %lld: range [%lld, %lld), expected [%lld, %lld)", (long long)k,
              (long long)ranges[2 * k], (long long)ranges[2 * k + 1], (long long)pos,
              (long long)(pos + cnt));
      } else {
        check(ranges[2 * k] == 0 && ranges[2 * k + 1] == 0, "tile %lld: not empty", (long long)k);
      }
      for (int64_t c = 0; c < cnt; ++c)
        check(ids[pos + c] == lists[k][c], "tile %lld: id %d, expected %lld", (long long)k,
              ids[pos + c], (long long)lists[k][c]);
      pos += cnt;
    }
  }
}

int bigindex() {
  bigindex_voxelizer();
  bigindex_rasterizer();
  bigindex_tiles();
  if (g_failures) return 1;
  std::printf("bigindex ok\n");
  return 0;
}

// more than 2^31 pairs: build_tile_lists must refuse before allocating per-pair buffers
int pairlimit() {
  const int n = 1 << 19;  // items, each in all 64 x 64 tiles: 2^31 pairs
  auto* boxes = static_cast<int*>(dev_alloc(sizeof(int) * 6 * n, -1));
  for (int i = 0; i < n; ++i) {
    const int b[6] = {0, 0, 0, 63, 0, 63};
    for (int c = 0; c < 6; ++c) boxes[6 * i + c] = b[c];
  }
  size_t biggest = 0;
  auto alloc = [&](size_t bytes, int) -> void* {
    biggest = bytes > biggest ? bytes : biggest;
    if (bytes > (64u << 20))
      throw std::runtime_error("test allocator: " + std::to_string(bytes) +
                               " bytes requested before the pair-count check");
    return dev_alloc(bytes, 0xff);
  };
  int32_t* ids = nullptr;
  int64_t* ranges = nullptr;
  try {
    vbgs::build_tile_lists(boxes, nullptr, n, 1, 64, 64, 64 * 64, alloc, nullptr, &ids, &ranges);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    if (msg.find("more than 2^31") != std::string::npos) {
      std::printf("pairlimit ok (largest allocation %zu bytes): %s\n", biggest, msg.c_str());
      return 0;
    }
    std::fprintf(stderr, "CHECK FAILED: wrong exception: %s\n", msg.c_str());
    return 1;
  }
  std::fprintf(stderr, "CHECK FAILED: 2^31 pairs accepted\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: vbemu vox_fwd|vox_bwd|ras_fwd|ras_bwd|comp_fwd|comp_bwd DIR | bigindex | "
                         "pairlimit | selftest NAME\n");
    return 2;
  }
  const std::string cmd = argv[1], arg = argc > 2 ? argv[2] : "";
  try {
    int rc;
    if (cmd == "vox_fwd") rc = vox_fwd(arg);
    else if (cmd == "vox_bwd") rc = vox_bwd(arg);
    else if (cmd == "ras_fwd") rc = ras_fwd(arg);
    else if (cmd == "ras_bwd") rc = ras_bwd(arg);
    else if (cmd == "comp_fwd") rc = comp_fwd(arg);
    else if (cmd == "comp_bwd") rc = comp_bwd(arg);
    else if (cmd == "bigindex") rc = bigindex();
    else if (cmd == "pairlimit") rc = pairlimit();
    else if (cmd == "selftest") rc = run_selftest(arg);
    else {
      std::fprintf(stderr, "vbemu: unknown command %s\n", cmd.c_str());
      return 2;
    }
    if (std::getenv("VBEMU_STATS")) {
      const auto& s = vbemu::stats();
      std::fprintf(stderr, "vbemu stats: %llu launches, %llu blocks, %llu barriers, %llu warp "
                           "collectives, %llu resumes\n",
                   (unsigned long long)s.launches, (unsigned long long)s.blocks,
                   (unsigned long long)s.barriers, (unsigned long long)s.collectives,
                   (unsigned long long)s.switches);
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vbemu: exception: %s\n", e.what());
    return 2;
  }
}
