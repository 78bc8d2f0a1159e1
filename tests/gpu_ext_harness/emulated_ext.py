"""The six entry points of ``volbench_gpu_ext`` (gpu_ext/csrc/bindings.cpp) on CPU tensors, run
by the harness executable (``vbemu``, see build.py): same arguments, same outputs, so tests can
call the kernels directly or hand this object to ops.py's autograd Functions in place of the
extension (monkeypatching ``backend.load``).  Inputs go to the executable as raw files in a
temporary folder; a non-zero exit raises EmulatorError with the harness's message.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import build as _build


class EmulatorError(RuntimeError):
    def __init__(self, cmd: str, returncode: int, stderr: str):
        self.cmd, self.returncode, self.stderr = cmd, returncode, stderr
        how = f"exited with {returncode}"
        if returncode < 0:
            sig = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else ""
            how = f"killed by signal {-returncode} {sig}"
            if sig == "SIGSEGV":
                how += " (an access past a buffer's guard page, or a wild index)"
        super().__init__(f"vbemu {cmd} {how}:\n{stderr[-4000:]}")


def _f32(t: torch.Tensor, name: str) -> np.ndarray:
    if t.dtype != torch.float32:
        raise TypeError(f"volbench_gpu_ext: {name} must be float32")
    return t.detach().cpu().contiguous().numpy()


class EmulatedExt:
    VOXEL_TILE = 8
    PIXEL_TILE = 16

    def __init__(self, exe: Path, flavour: str = "fast", timeout: float = 600.0):
        self.exe = Path(exe)
        self.env = _build.run_env(flavour)
        self.timeout = timeout
        self.last: dict[str, torch.Tensor] = {}  # extra outputs of the last forward (boxes...)

    def run(self, cmd: str, *args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([str(self.exe), cmd, *args], capture_output=True, text=True,
                             env=self.env, timeout=self.timeout)
        if res.returncode != 0:
            raise EmulatorError(cmd, res.returncode, res.stderr + res.stdout)
        return res

    def _call(self, cmd, arrays: dict, params: dict, outputs: dict) -> dict:
        with tempfile.TemporaryDirectory(prefix="vbemu-") as d:
            d = Path(d)
            for name, a in arrays.items():
                np.ascontiguousarray(a).tofile(d / f"{name}.bin")
            lines = [" ".join([k] + [repr(float(v)) for v in
                                     (vals if isinstance(vals, (list, tuple)) else [vals])])
                     for k, vals in params.items()]
            (d / "params.txt").write_text("\n".join(lines) + "\n")
            self.run(cmd, str(d))
            return {name: torch.from_numpy(np.fromfile(d / f"{name}.bin", dtype=dt).copy())
                    for name, dt in outputs.items()}

    # ------------------------------------------------------------------ voxelizer
    def voxelize_forward(self, means, A, amps, half_ext, origin, spacing, shape, cutoff):
        r = self._call("vox_fwd",
                       {"means": _f32(means, "means"), "A": _f32(A, "A"),
                        "amps": _f32(amps, "amps"), "half_ext": _f32(half_ext, "half_ext")},
                       {"origin": list(origin), "spacing": list(spacing), "shape": list(shape),
                        "cutoff": cutoff},
                       {"out": np.float32, "ids": np.int32, "ranges": np.int64,
                        "boxes": np.int32})
        self.last = {"boxes": r["boxes"].reshape(-1, 6)}
        return [r["out"].reshape([int(s) for s in shape]), r["ids"], r["ranges"]]

    def voxelize_backward(self, grad_out, means, A, amps, ids, ranges, origin, spacing, shape,
                          cutoff):
        n = amps.shape[0]
        r = self._call("vox_bwd",
                       {"grad_out": _f32(grad_out, "grad_out"), "means": _f32(means, "means"),
                        "A": _f32(A, "A"), "amps": _f32(amps, "amps"),
                        "ids": ids.to(torch.int32).numpy(), "ranges": ranges.to(torch.int64).numpy()},
                       {"origin": list(origin), "spacing": list(spacing), "shape": list(shape),
                        "cutoff": cutoff},
                       {"g_means": np.float32, "g_A": np.float32, "g_amps": np.float32})
        return [r["g_means"].reshape(n, 3), r["g_A"].reshape(n, 9), r["g_amps"]]

    # ------------------------------------------------------------------ rasterizer
    def raster_forward(self, mean2d, conic, weight, radii, B, N, H, W, ps, cutoff):
        r = self._call("ras_fwd",
                       {"mean2d": _f32(mean2d, "mean2d"), "conic": _f32(conic, "conic"),
                        "weight": _f32(weight, "weight"), "radii": _f32(radii, "radii")},
                       {"B": B, "N": N, "H": H, "W": W, "pixel_size": list(ps), "cutoff": cutoff},
                       {"out": np.float32, "ids": np.int32, "ranges": np.int64,
                        "boxes": np.int32, "key_base": np.int64})
        self.last = {"boxes": r["boxes"].reshape(-1, 6), "key_base": r["key_base"]}
        return [r["out"].reshape(int(B), int(H), int(W)), r["ids"], r["ranges"]]

    def raster_backward(self, grad_out, mean2d, conic, weight, ids, ranges, B, N, H, W, ps,
                        cutoff):
        r = self._call("ras_bwd",
                       {"grad_out": _f32(grad_out, "grad_out"), "mean2d": _f32(mean2d, "mean2d"),
                        "conic": _f32(conic, "conic"), "weight": _f32(weight, "weight"),
                        "ids": ids.to(torch.int32).numpy(), "ranges": ranges.to(torch.int64).numpy()},
                       {"B": B, "N": N, "H": H, "W": W, "pixel_size": list(ps), "cutoff": cutoff},
                       {"g_mean2d": np.float32, "g_conic": np.float32, "g_weight": np.float32})
        n = int(B) * int(N)
        return [r["g_mean2d"].reshape(n, 2), r["g_conic"].reshape(n, 3), r["g_weight"]]


    # ------------------------------------------------------------------ compositing rasterizer
    @staticmethod
    def _comp_arrays(m2, conic, wpeak, order, values):
        if order.dtype != torch.int64:
            raise TypeError("volbench_gpu_ext: order must be int64")
        return {"m2": _f32(m2, "m2"), "conic": _f32(conic, "conic"), "wpeak": _f32(wpeak, "wpeak"),
                "order": order.detach().cpu().contiguous().numpy(),
                "values": _f32(values, "values")}

    @staticmethod
    def _comp_params(m2, values, H, W, ps_r, ps_c, cutoff, additive):
        return {"B": m2.shape[0], "N": m2.shape[1], "H": H, "W": W, "F": values.shape[1],
                "pixel_size": [ps_r, ps_c], "cutoff": cutoff, "additive": int(bool(additive))}

    def composite_fwd(self, m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff, additive):
        B, N, F = m2.shape[0], m2.shape[1], values.shape[1]
        r = self._call("comp_fwd", self._comp_arrays(m2, conic, wpeak, order, values),
                       self._comp_params(m2, values, H, W, ps_r, ps_c, cutoff, additive),
                       {"out": np.float32, "alpha": np.float32, "t_save": np.float32,
                        "n_live": np.int32, "ids": np.int32, "ranges": np.int64,
                        "boxes": np.int32, "key_base": np.int64})
        self.last = {"boxes": r["boxes"].reshape(-1, 6), "key_base": r["key_base"]}
        H, W = int(H), int(W)
        return [r["out"].reshape(B, F, H, W), r["alpha"].reshape(B, H, W),
                r["t_save"].reshape(B, H, W), r["n_live"].reshape(B, H, W), r["ids"], r["ranges"]]

    def composite_bwd(self, m2, conic, wpeak, order, values, H, W, ps_r, ps_c, cutoff, additive,
                      saved, grad_out, grad_alpha):
        B, N, F = m2.shape[0], m2.shape[1], values.shape[1]
        t_save, n_live, ids, ranges = saved
        arrays = self._comp_arrays(m2, conic, wpeak, order, values)
        arrays.update({"grad_out": _f32(grad_out, "grad_out"),
                       "grad_alpha": _f32(grad_alpha, "grad_alpha"),
                       "t_save": _f32(t_save, "t_save"),
                       "n_live": n_live.to(torch.int32).numpy(),
                       "ids": ids.to(torch.int32).numpy(), "ranges": ranges.to(torch.int64).numpy()})
        r = self._call("comp_bwd", arrays,
                       self._comp_params(m2, values, H, W, ps_r, ps_c, cutoff, additive),
                       {"g_m2": np.float32, "g_conic": np.float32, "g_wpeak": np.float32,
                        "g_values": np.float32})
        return [r["g_m2"].reshape(B, N, 2), r["g_conic"].reshape(B, N, 3),
                r["g_wpeak"].reshape(B, N), r["g_values"].reshape(N, F)]

def tile_lists(tlo: torch.Tensor, thi: torch.Tensor, key_base: torch.Tensor, grid, n_keys: int):
    """Reference (ids, ranges) of build_tile_lists: items' inclusive tile boxes (P,3) in a
    (tz, ty, tx) grid (rows with any hi < lo are empty), keys base + linear tile index, stable."""
    from volbench.gaussian_ops import torch_impl as twin

    src, coords = twin._expand_boxes(tlo.long(), thi.long())
    tz, ty, tx = grid
    keys = key_base[src] + (coords[:, 0] * ty + coords[:, 1]) * tx + coords[:, 2]
    keys, order = torch.sort(keys, stable=True)
    ids = src[order].to(torch.int32)
    counts = torch.bincount(keys, minlength=n_keys)
    end = torch.cumsum(counts, 0)
    start = end - counts
    ranges = torch.stack([torch.where(counts > 0, start, 0), torch.where(counts > 0, end, 0)], 1)
    return ids, ranges.reshape(-1)
