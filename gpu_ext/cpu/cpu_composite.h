// Compositing splat stage of seed 004's slice rasterizer on the CPU (cpu_composite.cpp);
// registered in cpu_backend.cpp's module.  Contract: workflow/volbench/gaussian_ops/composite.py.
#pragma once

#include <torch/extension.h>

#include <vector>

namespace vbcomp {

// -> [out (B,F,H,W), alpha (B,H,W), row_start (B*H+1, int64), row_ids (int32)]
std::vector<torch::Tensor> composite_fwd(torch::Tensor m2, torch::Tensor conic,
                                         torch::Tensor wpeak, torch::Tensor order,
                                         torch::Tensor values, int64_t H, int64_t W, double ps_r,
                                         double ps_c, double cutoff, bool additive);

// -> [g_m2 (B,N,2), g_conic (B,N,3), g_wpeak (B,N), g_values (N,F)]
std::vector<torch::Tensor> composite_bwd(torch::Tensor m2, torch::Tensor conic,
                                         torch::Tensor wpeak, torch::Tensor order,
                                         torch::Tensor values, int64_t H, int64_t W, double ps_r,
                                         double ps_c, double cutoff, bool additive,
                                         std::vector<torch::Tensor> saved,
                                         torch::Tensor grad_out, torch::Tensor grad_alpha);

}  // namespace vbcomp
