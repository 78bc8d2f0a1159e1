// Python bindings of volbench_gpu_ext: the only file that touches torch tensors.  Checks the
// inputs, allocates outputs and scratch as tensors on the inputs' device and stream, and calls
// the pointer-based kernels (common.h).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <initializer_list>
#include <vector>

#include "common.h"

namespace {

void check_input(const torch::Tensor& t, const char* name, int64_t cols) {
  TORCH_CHECK(t.is_cuda(), "volbench_gpu_ext: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32, "volbench_gpu_ext: ", name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), "volbench_gpu_ext: ", name, " must be contiguous");
  if (cols > 0) {
    TORCH_CHECK(t.dim() == 2 && t.size(1) == cols, "volbench_gpu_ext: ", name, " must be (N, ",
                cols, ")");
  } else {
    TORCH_CHECK(t.dim() == 1, "volbench_gpu_ext: ", name, " must be (N,)");
  }
}

// Tensor-backed allocator for build_tile_lists: scratch tensors live until the call returns
// (the caching allocator orders their reuse on the stream), slots 1 and 2 are returned.
struct Buffers {
  torch::Device device;
  std::vector<torch::Tensor> scratch;
  torch::Tensor ids, ranges;
  explicit Buffers(torch::Device d) : device(d) {}
  vbgs::AllocFn fn() {
    return [this](size_t bytes, int slot) -> void* {
      auto opts = torch::TensorOptions().device(device);
      if (slot == 1) {
        ids = torch::empty({static_cast<int64_t>((bytes + 3) / 4)}, opts.dtype(torch::kInt32));
        return ids.data_ptr();
      }
      if (slot == 2) {
        ranges = torch::empty({static_cast<int64_t>((bytes + 7) / 8)}, opts.dtype(torch::kInt64));
        return ranges.data_ptr();
      }
      scratch.push_back(torch::empty({static_cast<int64_t>(bytes)}, opts.dtype(torch::kUInt8)));
      return scratch.back().data_ptr();
    };
  }
};

vbgs::VoxGeom vox_geom(const std::vector<double>& origin, const std::vector<double>& spacing,
                       const std::vector<int64_t>& shape, double cutoff) {
  TORCH_CHECK(origin.size() == 3 && spacing.size() == 3 && shape.size() == 3,
              "volbench_gpu_ext: origin, spacing and shape need 3 entries");
  return vbgs::make_vox_geom(origin.data(), spacing.data(), shape.data(), cutoff);
}

std::vector<torch::Tensor> voxelize_forward(torch::Tensor means, torch::Tensor A,
                                            torch::Tensor amps, torch::Tensor half_ext,
                                            std::vector<double> origin,
                                            std::vector<double> spacing,
                                            std::vector<int64_t> shape, double cutoff) {
  check_input(means, "means", 3);
  check_input(A, "A", 9);
  check_input(amps, "amps", 0);
  check_input(half_ext, "half_ext", 3);
  const int64_t n = means.size(0);
  TORCH_CHECK(A.size(0) == n && amps.size(0) == n && half_ext.size(0) == n,
              "volbench_gpu_ext: inconsistent numbers of Gaussians");
  TORCH_CHECK(n < (1LL << 31), "volbench_gpu_ext: too many Gaussians");
  const c10::cuda::CUDAGuard guard(means.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  vbgs::VoxGeom g = vox_geom(origin, spacing, shape, cutoff);
  const int64_t n_tiles = static_cast<int64_t>(g.tiles[0]) * g.tiles[1] * g.tiles[2];

  // every voxel of the ROI belongs to exactly one tile and every tile gets a block that writes
  // all its voxels (0 when its list is empty): no memset needed when the kernel runs
  auto out = (n > 0 && n_tiles > 0)
                 ? torch::empty({shape[0], shape[1], shape[2]}, means.options())
                 : torch::zeros({shape[0], shape[1], shape[2]}, means.options());
  Buffers buf(means.device());
  auto boxes = torch::empty({std::max<int64_t>(n, 1), 6}, means.options().dtype(torch::kInt32));
  vbgs::voxel_tile_boxes(means.data_ptr<float>(), half_ext.data_ptr<float>(),
                         static_cast<int>(n), g, boxes.data_ptr<int>(), stream);
  int32_t* ids = nullptr;
  int64_t* ranges = nullptr;
  vbgs::build_tile_lists(boxes.data_ptr<int>(), nullptr, static_cast<int>(n), g.tiles[0],
                         g.tiles[1], g.tiles[2], n_tiles, buf.fn(), stream, &ids, &ranges);
  if (n > 0 && n_tiles > 0) {
    vbgs::voxelize_forward(means.data_ptr<float>(), A.data_ptr<float>(), amps.data_ptr<float>(),
                           ids, ranges, g, out.data_ptr<float>(), stream);
  }
  return {out, buf.ids, buf.ranges};
}

std::vector<torch::Tensor> voxelize_backward(torch::Tensor grad_out, torch::Tensor means,
                                             torch::Tensor A, torch::Tensor amps,
                                             torch::Tensor ids, torch::Tensor ranges,
                                             std::vector<double> origin,
                                             std::vector<double> spacing,
                                             std::vector<int64_t> shape, double cutoff) {
  check_input(means, "means", 3);
  check_input(A, "A", 9);
  check_input(amps, "amps", 0);
  TORCH_CHECK(grad_out.is_cuda() && grad_out.scalar_type() == torch::kFloat32 &&
                  grad_out.is_contiguous() && grad_out.dim() == 3 &&
                  grad_out.size(0) == shape[0] && grad_out.size(1) == shape[1] &&
                  grad_out.size(2) == shape[2],
              "volbench_gpu_ext: grad_out must be a contiguous float32 CUDA tensor of the ROI shape");
  const c10::cuda::CUDAGuard guard(means.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  vbgs::VoxGeom g = vox_geom(origin, spacing, shape, cutoff);
  const int64_t n_tiles = static_cast<int64_t>(g.tiles[0]) * g.tiles[1] * g.tiles[2];
  TORCH_CHECK(ranges.numel() >= 2 * n_tiles, "volbench_gpu_ext: tile ranges do not match the ROI");
  auto g_means = torch::zeros_like(means);
  auto g_A = torch::zeros_like(A);
  auto g_amps = torch::zeros_like(amps);
  if (means.size(0) > 0 && n_tiles > 0) {
    vbgs::voxelize_backward(grad_out.data_ptr<float>(), means.data_ptr<float>(),
                            A.data_ptr<float>(), amps.data_ptr<float>(),
                            ids.data_ptr<int32_t>(), ranges.data_ptr<int64_t>(), g,
                            g_means.data_ptr<float>(), g_A.data_ptr<float>(),
                            g_amps.data_ptr<float>(), stream);
  }
  return {g_means, g_A, g_amps};
}

vbgs::PixGeom pix_geom(int64_t B, int64_t N, int64_t H, int64_t W, const std::vector<double>& ps,
                       double cutoff) {
  TORCH_CHECK(ps.size() == 2, "volbench_gpu_ext: pixel_size must be 2 positive numbers");
  return vbgs::make_pix_geom(B, N, H, W, ps.data(), cutoff);
}

std::vector<torch::Tensor> raster_forward(torch::Tensor mean2d, torch::Tensor conic,
                                          torch::Tensor weight, torch::Tensor radii, int64_t B,
                                          int64_t N, int64_t H, int64_t W,
                                          std::vector<double> ps, double cutoff) {
  check_input(mean2d, "mean2d", 2);
  check_input(conic, "conic", 3);
  check_input(weight, "weight", 0);
  check_input(radii, "radii", 2);
  TORCH_CHECK(mean2d.size(0) == B * N && conic.size(0) == B * N && weight.size(0) == B * N &&
                  radii.size(0) == B * N,
              "volbench_gpu_ext: footprints must have B*N rows");
  const c10::cuda::CUDAGuard guard(mean2d.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  vbgs::PixGeom g = pix_geom(B, N, H, W, ps, cutoff);
  const int64_t n_keys = B * static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  const int64_t n_items = B * N;

  // every pixel is written by the block of its (camera, tile) key when the kernel runs
  auto out = (n_items > 0 && n_keys > 0) ? torch::empty({B, H, W}, mean2d.options())
                                         : torch::zeros({B, H, W}, mean2d.options());
  Buffers buf(mean2d.device());
  auto opts = mean2d.options();
  auto boxes = torch::empty({std::max<int64_t>(n_items, 1), 6}, opts.dtype(torch::kInt32));
  auto key_base = torch::empty({std::max<int64_t>(n_items, 1)}, opts.dtype(torch::kInt64));
  vbgs::raster_tile_boxes(mean2d.data_ptr<float>(), radii.data_ptr<float>(), g,
                          boxes.data_ptr<int>(), key_base.data_ptr<int64_t>(), stream);
  int32_t* ids = nullptr;
  int64_t* ranges = nullptr;
  vbgs::build_tile_lists(boxes.data_ptr<int>(), key_base.data_ptr<int64_t>(),
                         static_cast<int>(n_items), 1, g.tiles[0], g.tiles[1], n_keys,
                         buf.fn(), stream, &ids, &ranges);
  if (n_items > 0 && n_keys > 0) {
    vbgs::raster_forward(mean2d.data_ptr<float>(), conic.data_ptr<float>(),
                         weight.data_ptr<float>(), ids, ranges, g, out.data_ptr<float>(), stream);
  }
  return {out, buf.ids, buf.ranges};
}

std::vector<torch::Tensor> raster_backward(torch::Tensor grad_out, torch::Tensor mean2d,
                                           torch::Tensor conic, torch::Tensor weight,
                                           torch::Tensor ids, torch::Tensor ranges, int64_t B,
                                           int64_t N, int64_t H, int64_t W,
                                           std::vector<double> ps, double cutoff) {
  check_input(mean2d, "mean2d", 2);
  check_input(conic, "conic", 3);
  check_input(weight, "weight", 0);
  TORCH_CHECK(grad_out.is_cuda() && grad_out.scalar_type() == torch::kFloat32 &&
                  grad_out.is_contiguous() && grad_out.dim() == 3 && grad_out.size(0) == B &&
                  grad_out.size(1) == H && grad_out.size(2) == W,
              "volbench_gpu_ext: grad_out must be a contiguous float32 CUDA tensor (B, H, W)");
  const c10::cuda::CUDAGuard guard(mean2d.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  vbgs::PixGeom g = pix_geom(B, N, H, W, ps, cutoff);
  const int64_t n_keys = B * static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  TORCH_CHECK(ranges.numel() >= 2 * n_keys, "volbench_gpu_ext: tile ranges do not match the images");
  auto g_mean2d = torch::zeros_like(mean2d);
  auto g_conic = torch::zeros_like(conic);
  auto g_weight = torch::zeros_like(weight);
  if (B * N > 0 && n_keys > 0) {
    vbgs::raster_backward(grad_out.data_ptr<float>(), mean2d.data_ptr<float>(),
                          conic.data_ptr<float>(), weight.data_ptr<float>(),
                          ids.data_ptr<int32_t>(), ranges.data_ptr<int64_t>(), g,
                          g_mean2d.data_ptr<float>(), g_conic.data_ptr<float>(),
                          g_weight.data_ptr<float>(), stream);
  }
  return {g_mean2d, g_conic, g_weight};
}

// ------------------------------------------------------------------ compositing rasterizer

void check_comp(const torch::Tensor& t, const char* name, std::initializer_list<int64_t> shape,
                torch::ScalarType dtype = torch::kFloat32) {
  TORCH_CHECK(t.is_cuda(), "volbench_gpu_ext: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "volbench_gpu_ext: ", name, " must be ",
              dtype == torch::kFloat32 ? "float32" : "int64");
  TORCH_CHECK(t.is_contiguous(), "volbench_gpu_ext: ", name, " must be contiguous");
  TORCH_CHECK(t.sizes().vec() == std::vector<int64_t>(shape), "volbench_gpu_ext: ", name,
              " has shape ", t.sizes(), ", expected ", c10::IntArrayRef(shape));
}

// shapes of the contract (B,N,2) (B,N,3) (B,N) (B,N) int64 (N,F); returns the geometry
vbgs::CompGeom comp_inputs(const torch::Tensor& m2, const torch::Tensor& conic,
                           const torch::Tensor& wpeak, const torch::Tensor& order,
                           const torch::Tensor& values, int64_t H, int64_t W, double ps_r,
                           double ps_c, double cutoff, bool additive) {
  TORCH_CHECK(m2.dim() == 3 && values.dim() == 2,
              "volbench_gpu_ext: m2 must be (B, N, 2) and values (N, F)");
  const int64_t B = m2.size(0), N = m2.size(1), F = values.size(1);
  check_comp(m2, "m2", {B, N, 2});
  check_comp(conic, "conic", {B, N, 3});
  check_comp(wpeak, "wpeak", {B, N});
  check_comp(order, "order", {B, N}, torch::kInt64);
  check_comp(values, "values", {N, F});
  TORCH_CHECK(conic.device() == m2.device() && wpeak.device() == m2.device() &&
                  order.device() == m2.device() && values.device() == m2.device(),
              "volbench_gpu_ext: the inputs must be on one device");
  // geometry first: it refuses B * N >= 2^31 before anything is allocated
  vbgs::CompGeom g = vbgs::make_comp_geom(B, N, H, W, F, ps_r, ps_c, cutoff, additive);
  if (order.numel() > 0) {
    const auto mm = torch::aminmax(order);
    const int64_t lo = std::get<0>(mm).item<int64_t>(), hi = std::get<1>(mm).item<int64_t>();
    TORCH_CHECK(lo >= -1 && hi < N, "volbench_gpu_ext: order holds ", lo, " .. ", hi,
                ", outside [-1, N) with N = ", N);
  }
  return g;
}

std::vector<torch::Tensor> composite_fwd(torch::Tensor m2, torch::Tensor conic,
                                         torch::Tensor wpeak, torch::Tensor order,
                                         torch::Tensor values, int64_t H, int64_t W, double ps_r,
                                         double ps_c, double cutoff, bool additive) {
  const vbgs::CompGeom g = comp_inputs(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff,
                                       additive);
  const c10::cuda::CUDAGuard guard(m2.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = g.B, F = g.F, n_items = static_cast<int64_t>(g.B) * g.N;
  const int64_t n_keys = B * static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  const bool runs = n_items > 0 && n_keys > 0;
  auto opts = m2.options();
  // every pixel (and channel) is written by the blocks of its (slice, tile) key when they run
  auto out = runs ? torch::empty({B, F, H, W}, opts) : torch::zeros({B, F, H, W}, opts);
  auto alpha = runs ? torch::empty({B, H, W}, opts) : torch::zeros({B, H, W}, opts);
  auto t_save = runs ? torch::empty({B, H, W}, opts) : torch::ones({B, H, W}, opts);
  auto n_live = runs ? torch::empty({B, H, W}, opts.dtype(torch::kInt32))
                     : torch::zeros({B, H, W}, opts.dtype(torch::kInt32));
  Buffers buf(m2.device());
  auto boxes = torch::empty({std::max<int64_t>(n_items, 1), 6}, opts.dtype(torch::kInt32));
  auto key_base = torch::empty({std::max<int64_t>(n_items, 1)}, opts.dtype(torch::kInt64));
  vbgs::composite_tile_boxes(m2.data_ptr<float>(), conic.data_ptr<float>(),
                             order.data_ptr<int64_t>(), g, boxes.data_ptr<int>(),
                             key_base.data_ptr<int64_t>(), stream);
  int32_t* ids = nullptr;
  int64_t* ranges = nullptr;
  // refuses more than 2^31 (tile, item) pairs before allocating the per-pair buffers
  vbgs::build_tile_lists(boxes.data_ptr<int>(), key_base.data_ptr<int64_t>(),
                         static_cast<int>(n_items), 1, g.tiles[0], g.tiles[1], n_keys, buf.fn(),
                         stream, &ids, &ranges);
  if (runs) {
    vbgs::composite_forward(m2.data_ptr<float>(), conic.data_ptr<float>(),
                            wpeak.data_ptr<float>(), order.data_ptr<int64_t>(),
                            values.data_ptr<float>(), ids, ranges, g, out.data_ptr<float>(),
                            alpha.data_ptr<float>(), t_save.data_ptr<float>(),
                            n_live.data_ptr<int32_t>(), stream);
  }
  return {out, alpha, t_save, n_live, buf.ids, buf.ranges};
}

std::vector<torch::Tensor> composite_bwd(torch::Tensor m2, torch::Tensor conic,
                                         torch::Tensor wpeak, torch::Tensor order,
                                         torch::Tensor values, int64_t H, int64_t W, double ps_r,
                                         double ps_c, double cutoff, bool additive,
                                         std::vector<torch::Tensor> saved, torch::Tensor grad_out,
                                         torch::Tensor grad_alpha) {
  const vbgs::CompGeom g = comp_inputs(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff,
                                       additive);
  const c10::cuda::CUDAGuard guard(m2.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = g.B, F = g.F, n_items = static_cast<int64_t>(g.B) * g.N;
  const int64_t n_keys = B * static_cast<int64_t>(g.tiles[0]) * g.tiles[1];
  check_comp(grad_out, "grad_out", {B, F, H, W});
  check_comp(grad_alpha, "grad_alpha", {B, H, W});
  TORCH_CHECK(saved.size() == 4, "volbench_gpu_ext: saved must be the 4 tensors of composite_fwd");
  const auto &t_save = saved[0], &n_live = saved[1], &ids = saved[2], &ranges = saved[3];
  check_comp(t_save, "saved t_save", {B, H, W});
  check_comp(n_live, "saved n_live", {B, H, W}, torch::kInt32);
  TORCH_CHECK(ids.is_cuda() && ids.scalar_type() == torch::kInt32 && ids.is_contiguous() &&
                  ranges.is_cuda() && ranges.scalar_type() == torch::kInt64 &&
                  ranges.is_contiguous() && ranges.numel() >= 2 * n_keys,
              "volbench_gpu_ext: saved tile lists do not match the slices");
  auto g_m2 = torch::zeros_like(m2);
  auto g_conic = torch::zeros_like(conic);
  auto g_wpeak = torch::zeros_like(wpeak);
  auto g_values = torch::zeros_like(values);
  if (n_items > 0 && n_keys > 0) {
    vbgs::composite_backward(m2.data_ptr<float>(), conic.data_ptr<float>(),
                             wpeak.data_ptr<float>(), order.data_ptr<int64_t>(),
                             values.data_ptr<float>(), ids.data_ptr<int32_t>(),
                             ranges.data_ptr<int64_t>(), g, t_save.data_ptr<float>(),
                             n_live.data_ptr<int32_t>(), grad_out.data_ptr<float>(),
                             grad_alpha.data_ptr<float>(), g_m2.data_ptr<float>(),
                             g_conic.data_ptr<float>(), g_wpeak.data_ptr<float>(),
                             g_values.data_ptr<float>(), stream);
  }
  return {g_m2, g_conic, g_wpeak, g_values};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "volbench CUDA kernels for Gaussian volumes (voxelizer, slice rasterizer, compositing slice rasterizer)";
  m.def("voxelize_forward", &voxelize_forward,
        "(means, A(N,9), amps, half_ext, origin, spacing, shape, cutoff) -> (out, ids, ranges)");
  m.def("voxelize_backward", &voxelize_backward,
        "(grad_out, means, A, amps, ids, ranges, origin, spacing, shape, cutoff) -> grads");
  m.def("raster_forward", &raster_forward,
        "(mean2d, conic, weight, radii, B, N, H, W, pixel_size, cutoff) -> (out, ids, ranges)");
  m.def("raster_backward", &raster_backward,
        "(grad_out, mean2d, conic, weight, ids, ranges, B, N, H, W, pixel_size, cutoff) -> grads");
  m.def("composite_fwd", &composite_fwd,
        "(m2 (B,N,2), conic (B,N,3), wpeak (B,N), order (B,N) int64, values (N,F), H, W, ps_r, "
        "ps_c, cutoff, additive) -> [out (B,F,H,W), alpha (B,H,W), *saved]");
  m.def("composite_bwd", &composite_bwd,
        "(m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff, additive, saved, grad_out, "
        "grad_alpha) -> [g_m2, g_conic, g_wpeak, g_values]");
  m.attr("VOXEL_TILE") = vbgs::kVoxTile;
  m.attr("PIXEL_TILE") = vbgs::kPixTile;
}
