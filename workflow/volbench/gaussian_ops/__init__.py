"""Gaussian operators (voxelizer, slice rasterizer) shared by the Gaussian codecs.

ops.py is the public API (CUDA kernels of gpu_ext/ when available, else the PyTorch twin in
torch_impl.py); backend.py loads the extension; fixed.py is the decoders' fixed-arithmetic
evaluation (bit-identical on any CPU).
"""

from .ops import (axial_cameras, backend_name, covariance, rasterize_slices, uses_cpu_ext,
                  uses_cuda, voxelize)

__all__ = ["voxelize", "rasterize_slices", "axial_cameras", "covariance", "uses_cuda",
           "uses_cpu_ext", "backend_name"]
