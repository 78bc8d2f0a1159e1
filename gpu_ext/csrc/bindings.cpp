// Python bindings of volbench_gpu_ext: the only file that touches torch tensors.  Checks the
// inputs, allocates outputs and scratch as tensors on the inputs' device and stream, and calls
// the pointer-based kernels (common.h).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "volbench CUDA kernels for Gaussian volumes (voxelizer, slice rasterizer)";
  m.def("voxelize_forward", &voxelize_forward,
        "(means, A(N,9), amps, half_ext, origin, spacing, shape, cutoff) -> (out, ids, ranges)");
  m.def("voxelize_backward", &voxelize_backward,
        "(grad_out, means, A, amps, ids, ranges, origin, spacing, shape, cutoff) -> grads");
  m.def("raster_forward", &raster_forward,
        "(mean2d, conic, weight, radii, B, N, H, W, pixel_size, cutoff) -> (out, ids, ranges)");
  m.def("raster_backward", &raster_backward,
        "(grad_out, mean2d, conic, weight, ids, ranges, B, N, H, W, pixel_size, cutoff) -> grads");
  m.attr("VOXEL_TILE") = vbgs::kVoxTile;
  m.attr("PIXEL_TILE") = vbgs::kPixTile;
}
