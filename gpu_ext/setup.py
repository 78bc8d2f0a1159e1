"""Build volbench_gpu_ext, the CUDA kernels of volbench's Gaussian operators.

    pip install ./gpu_ext --no-build-isolation      # needs torch (CUDA build) and nvcc
    TORCH_CUDA_ARCH_LIST="8.0" pip install ./gpu_ext --no-build-isolation   # one architecture

Architectures: TORCH_CUDA_ARCH_LIST (default "8.0;9.0": A100/A800 and H100/H200).
"""

import os
from pathlib import Path

from setuptools import setup

os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
# torch guesses CUDA_HOME from `which nvcc`, which goes wrong when nvcc on PATH is a wrapper
# script outside the toolkit: prefer the standard toolkit location when CUDA_HOME is not given
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")):
    if os.path.isfile("/usr/local/cuda/include/cuda_runtime_api.h"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"

from torch.utils.cpp_extension import BuildExtension, CUDAExtension  # noqa: E402

HERE = Path(__file__).resolve().parent
CSRC = HERE / "csrc"
SOURCES = ["bindings.cpp", "tiles.cu", "voxelize_fwd.cu", "voxelize_bwd.cu",
           "raster_fwd.cu", "raster_bwd.cu", "composite_fwd.cu", "composite_bwd.cu"]

setup(
    name="volbench_gpu_ext",
    version="0.1.0",
    description="CUDA voxelizer and slice rasterizers for Gaussian volumes (volbench)",
    ext_modules=[
        CUDAExtension(
            name="volbench_gpu_ext",
            # relative paths: setuptools refuses absolute source paths in sdists/wheels
            sources=[f"csrc/{s}" for s in SOURCES],
            include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]},
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
