"""SIREN / COIN: a neural implicit codec, one coordinate MLP trained per volume.

The volume is represented by a sine-activated MLP f: [-1, 1]^3 -> [-1, 1] (Sitzmann et al.
2020, SIREN) whose weights are the compressed file (Dupont et al. 2021, COIN). Encoding trains
the network with Adam on random voxel batches; decoding rebuilds the network from the file and
evaluates it at every voxel centre.

Network (``depth`` sine layers of ``width`` units, then one linear output unit)::

    h_1 = sin(w0 * (W_1 c + b_1))          c = (z, y, x) voxel coordinates in [-1, 1]^3
    h_k = sin(w0 * (W_k h_{k-1} + b_k))    k = 2..depth
    y   = W_out h_depth + b_out            intensity, (v - vmin) / (vmax - vmin) * 2 - 1

Initialisation (SIREN): W_1 ~ U(-1/3, 1/3); W_k and W_out ~ U(-sqrt(6/width)/w0, +sqrt(6/width)/w0);
biases as torch.nn.Linear (U(-1/sqrt(in), 1/sqrt(in))), which is what the SIREN reference code does.

File (the container's codec header, then the payload)::

    header  {"v": 1, "width", "depth", "weight_bits", "vmin", "vmax"}
    payload for each tensor in order W_1, b_1, ..., W_depth, b_depth, W_out, b_out:
              weight_bits 16: the tensor as little-endian float16
              weight_bits 8:  float32 offset, float32 step, then uint8 codes
                              (per-tensor affine quantisation: value = offset + code * step)

The stored sine-layer tensors have w0 folded in (w0*W_k, w0*b_k), so the decoder computes
sin(W'c + b') and needs no w0. Training runs in float32; the encoder quantises at the end and
decodes its own file once, so the PSNR it reports is the PSNR of what the decoder produces.
"""

from __future__ import annotations

import logging
import math
import struct
import sys
import time
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from ..errors import CorruptFile, VolbenchError
from ..history import write as write_history
from ..metrics import psnr_from_mse
from ..torchenv import import_torch, resolve_device, seed_everything
from .base import Codec, Encoded, VolumeInfo, file_size

log = logging.getLogger("volbench.codecs")

FORMAT_VERSION = 1

#: parameter presets; explicit parameters override them. "paper" is seed 001's COIN setting.
PRESETS: dict[str, dict[str, Any]] = {
    # 4 sine layers x 256 units + linear output ([256, 256, 256, 256, 1]), 10k iterations, float16
    "paper": {"width": 256, "depth": 4, "iterations": 10_000, "batch_size": 2**18, "lr": 2e-4},
    # a few seconds on 2 CPU cores for a 32x64x64 volume
    "demo": {"width": 32, "depth": 3, "iterations": 300, "batch_size": 4096, "lr": 1e-3},
}

#: activation memory budget per decode batch on CPU (fixed so CPU decoding is reproducible)
CPU_DECODE_BUDGET = 256 * 2**20
#: share of free GPU memory a decode batch may use for activations
GPU_DECODE_SHARE = 0.5

_F32 = struct.Struct("<ff")


# ----------------------------------------------------------------------------------------------
# sizes
def n_parameters(width: int, depth: int) -> int:
    """Number of network parameters: 3 inputs, `depth` sine layers of `width`, 1 output."""
    return (3 * width + width) + (depth - 1) * (width * width + width) + (width + 1)


def tensor_shapes(width: int, depth: int) -> list[tuple[int, ...]]:
    """Shapes of the stored tensors, in payload order."""
    shapes: list[tuple[int, ...]] = [(width, 3), (width,)]
    for _ in range(depth - 1):
        shapes += [(width, width), (width,)]
    shapes += [(1, width), (1,)]
    return shapes


def payload_bytes(width: int, depth: int, weight_bits: int) -> int:
    """Exact payload length: parameters x bytes per parameter (+ 8 bytes per tensor at 8 bits)."""
    p = n_parameters(width, depth)
    if weight_bits == 16:
        return 2 * p
    return p + _F32.size * len(tensor_shapes(width, depth))


def make_header(width: int, depth: int, weight_bits: int, vmin: float, vmax: float) -> dict[str, Any]:
    return {"v": FORMAT_VERSION, "width": int(width), "depth": int(depth), "weight_bits": int(weight_bits),
            "vmin": float(vmin), "vmax": float(vmax)}


def container_bytes(header: dict[str, Any], shape, dtype, width: int, depth: int, weight_bits: int) -> int:
    """Exact size of the container file for this header (payload content does not matter)."""
    return file_size(Encoded(header, b""), shape, dtype, "siren") + payload_bytes(width, depth, weight_bits)


# ----------------------------------------------------------------------------------------------
# torch helpers
def axis_coords(n: int, device, torch):
    """Voxel-centre coordinates of one axis in [-1, 1] (0 for a length-1 axis), float32."""
    if n == 1:
        return torch.zeros(1, dtype=torch.float32, device=device)
    return (torch.arange(n, dtype=torch.float64, device=device) * (2.0 / (n - 1)) - 1.0).float()


def coords_of(idx, shape, tables, torch):
    """Coordinates (B, 3) of flat voxel indices `idx` (int64) in a (Z, Y, X) grid."""
    _, ny, nx = shape
    z = torch.div(idx, ny * nx, rounding_mode="floor")
    r = idx - z * (ny * nx)
    y = torch.div(r, nx, rounding_mode="floor")
    x = r - y * nx
    return torch.stack((tables[0][z], tables[1][y], tables[2][x]), dim=1)


def mlp(x, tensors, scale: float = 1.0):
    """SIREN forward pass; `scale` = w0 for unfolded (training) tensors, 1 for stored ones."""
    torch = import_torch("siren")
    n = len(tensors) // 2
    h = x
    for k in range(n - 1):
        w, b = tensors[2 * k], tensors[2 * k + 1]
        a = torch.addmm(b, h, w.t())
        if torch.is_grad_enabled():
            h = torch.sin(a * scale if scale != 1.0 else a)
        else:  # decoding: in place, one activation buffer per layer
            h = (a.mul_(scale) if scale != 1.0 else a).sin_()
    return torch.addmm(tensors[-1], h, tensors[-2].t()).squeeze(1)


def init_tensors(width: int, depth: int, w0: float, generator, torch):
    """SIREN initialisation (float32 CPU tensors, drawn from `generator`)."""
    out = []
    for shape in tensor_shapes(width, depth)[0::2]:
        fan_in = shape[1]
        bound_w = 1.0 / fan_in if fan_in == 3 else math.sqrt(6.0 / fan_in) / w0
        bound_b = 1.0 / math.sqrt(fan_in)
        w = (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound_w
        b = (torch.rand((shape[0],), generator=generator, dtype=torch.float32) * 2 - 1) * bound_b
        out += [w, b]
    return out


# ----------------------------------------------------------------------------------------------
# serialisation
def fit(torch, tensors, target, sample, coords, w0: float, iterations: int, lr: float, log_every: int,
        desc: str, progress: bool, t_start: float) -> list[dict[str, Any]]:
    """The SIREN training loop (the codec and the sparse-slice method): Adam on the MSE between
    the network at coords(idx) and target[idx] for idx = sample() each step, on the [-1, 1] scale;
    returns the history rows (PSNR on the [0, 1] scale: the MSE / 4)."""
    from tqdm import tqdm

    history: list[dict[str, Any]] = []
    opt = torch.optim.Adam(tensors, lr=float(lr))
    bar = tqdm(total=iterations, file=sys.stderr, desc=desc, unit="it", leave=False, dynamic_ncols=True,
               mininterval=1.0, disable=not progress)
    for it in range(1, iterations + 1):
        idx = sample()
        pred = mlp(coords(idx), tensors, scale=w0)
        loss = torch.mean((pred - target[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if it % log_every == 0 or it == iterations:
            lv = float(loss.item())
            psnr = psnr_from_mse(lv / 4.0)  # the [-1, 1] scale's MSE / 4: PSNR on [0, 1]
            history.append({"iteration": it, "loss": lv, "psnr": psnr, "mse": lv / 4.0,
                            "seconds": time.perf_counter() - t_start, "stage": "train"})
            bar.set_postfix(loss=f"{lv:.3g}", psnr=f"{psnr:.2f}dB", refresh=False)
    bar.close()
    return history


def pack_weights(tensors: list[np.ndarray], weight_bits: int) -> bytes:
    """Serialise stored-form (w0 folded) float32 tensors into the payload."""
    parts = []
    for t in tensors:
        t = np.ascontiguousarray(t, dtype=np.float32).ravel()
        if weight_bits == 16:
            h = t.astype("<f2")
            if not np.all(np.isfinite(h)):
                raise VolbenchError("codec siren: a weight overflows float16 (training diverged); lower lr")
            parts.append(h.tobytes())
        else:
            lo, hi = float(t.min()), float(t.max())
            step = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
            lo32 = np.float32(lo)
            q = np.clip(np.rint((t - lo32) / step), 0, 255).astype(np.uint8)
            parts.append(_F32.pack(lo32, step) + q.tobytes())
    return b"".join(parts)


def unpack_weights(payload: bytes, width: int, depth: int, weight_bits: int) -> list[np.ndarray]:
    """Inverse of pack_weights: float32 numpy tensors in stored (w0 folded) form."""
    shapes = tensor_shapes(width, depth)
    out, off = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        if weight_bits == 16:
            t = np.frombuffer(payload, dtype="<f2", count=n, offset=off).astype(np.float32)
            off += 2 * n
        else:
            lo, step = _F32.unpack_from(payload, off)
            off += _F32.size
            q = np.frombuffer(payload, dtype=np.uint8, count=n, offset=off)
            off += n
            t = np.float32(lo) + q.astype(np.float32) * np.float32(step)
        out.append(t.reshape(shape))
    return out


def fold_w0(tensors, w0: float) -> list[np.ndarray]:
    """Training tensors -> stored form: sine-layer weights and biases times w0."""
    arr = [t.detach().cpu().numpy().astype(np.float32) for t in tensors]
    return [a * np.float32(w0) if i < len(arr) - 2 else a for i, a in enumerate(arr)]


def _parse_header(header: dict[str, Any]) -> tuple[int, int, int, float, float]:
    try:
        v = int(header["v"])
        width, depth, bits = int(header["width"]), int(header["depth"]), int(header["weight_bits"])
        vmin, vmax = float(header["vmin"]), float(header["vmax"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptFile(f"siren header is damaged ({type(exc).__name__}: {exc}); re-run its encode job") from None
    if v != FORMAT_VERSION:
        raise CorruptFile(f"siren file format version {v} is not supported (expected {FORMAT_VERSION})")
    if width < 1 or depth < 1 or bits not in (8, 16) or not (math.isfinite(vmin) and math.isfinite(vmax)) or vmax < vmin:
        raise CorruptFile(f"siren header has invalid values {header}; re-run its encode job")
    return width, depth, bits, vmin, vmax


# ----------------------------------------------------------------------------------------------
# decoding
def _decode_batch_size(width: int, device, n: int, torch) -> int:
    per_point = 4 * (2 * width + 16) + 8 * 4  # two activations, coordinates, indices
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        b = int(GPU_DECODE_SHARE * free / per_point)
        lo, hi = 2**16, 2**24
    else:
        b = CPU_DECODE_BUDGET // per_point
        lo, hi = 2**12, 2**20
    return int(max(1, min(n, max(lo, min(hi, b)))))


def evaluate_grid(tensors_np, shape, vmin: float, vmax: float, dtype, device, batch_size: int | None = None):
    """Evaluate the stored-form network on every voxel and return the array in `dtype`."""
    torch = import_torch("siren")
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    wide = dtype.kind == "f" and dtype.itemsize > 4 or dtype.kind in "iu" and dtype.itemsize > 2
    acc = torch.float64 if wide else torch.float32
    with torch.inference_mode():
        tensors = [torch.from_numpy(np.ascontiguousarray(t)).to(device) for t in tensors_np]
        tables = [axis_coords(s, device, torch) for s in shape]
        out_bytes = n * (8 if wide else 4)
        on_device = device.type == "cpu"
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            on_device = out_bytes < 0.4 * free
        out = torch.empty(n, dtype=acc, device=device if on_device else "cpu")
        bs = batch_size or _decode_batch_size(len(tensors_np[1]), device, n, torch)
        half = (vmax - vmin) / 2.0
        for s in range(0, n, bs):
            e = min(n, s + bs)
            idx = torch.arange(s, e, dtype=torch.int64, device=device)
            y = mlp(coords_of(idx, shape, tables, torch), tensors).to(acc)
            v = (y + 1.0) * half + vmin
            if dtype.kind in "iu":
                v = torch.round(v)
            v = torch.clamp(v, vmin, vmax)
            out[s:e] = v
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        arr = out.cpu().numpy().reshape(shape)
    return arr.astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------
@contextmanager
def _torch_state(threads: int, deterministic: bool):
    torch = import_torch("siren")
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.set_num_threads(max(1, int(threads)))
        if deterministic:  # CPU; on CUDA, cuBLAS would need CUBLAS_WORKSPACE_CONFIG set before start-up
            torch.use_deterministic_algorithms(True)
        yield torch
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


class SirenCodec(Codec):
    name = "siren"
    lossless = False
    display_name = "COIN (SIREN)"
    family = "neural"
    table_order = 50
    trains = True
    rate_knob = "width"
    rate_knob_range = (1.0, 1024.0)
    rate_knob_integer = True
    rate_knob_increases_size = True
    uses_gpu = True
    defaults: ClassVar[dict[str, Any]] = {
        "preset": "paper",  # "paper" (seed 001 COIN) or "demo"; the None entries below come from it
        "width": None,  # hidden units per sine layer
        "depth": None,  # number of sine layers (the output layer is extra)
        "iterations": None,  # Adam steps
        "batch_size": None,  # voxels per step (capped at the voxel count)
        "lr": None,  # Adam learning rate
        "w0": 30.0,  # SIREN frequency factor
        "weight_bits": 16,  # 16: float16 weights; 8: per-tensor affine 8-bit
        "foreground_fraction": 0.0,  # share of each batch drawn from voxels above the threshold
        "foreground_threshold": 0.01,  # on the [0, 1]-normalised intensity
        "log_every": None,  # history interval (default iterations / 200)
        "verify": True,  # decode the file at the end of encode and report its PSNR
    }

    def check_params(self) -> None:
        p = self.params
        if p["preset"] not in PRESETS:
            raise VolbenchError(f"codec siren: unknown preset {p['preset']!r}; use one of {sorted(PRESETS)}")
        for k, v in PRESETS[p["preset"]].items():
            if p[k] is None:
                p[k] = v
        for k in ("width", "depth", "iterations", "batch_size"):
            if int(p[k]) != p[k] or int(p[k]) < (0 if k == "iterations" else 1):
                raise VolbenchError(f"codec siren: {k} must be a positive integer, got {p[k]!r}")
            p[k] = int(p[k])
        if p["weight_bits"] not in (8, 16):
            raise VolbenchError(f"codec siren: weight_bits must be 16 or 8, got {p['weight_bits']!r}")
        if not 0.0 <= float(p["foreground_fraction"]) <= 1.0:
            raise VolbenchError(f"codec siren: foreground_fraction must lie in [0, 1], got {p['foreground_fraction']!r}")
        if not float(p["lr"]) > 0 or not float(p["w0"]) > 0:
            raise VolbenchError("codec siren: lr and w0 must be positive")
        if p["log_every"] is None:
            p["log_every"] = max(1, p["iterations"] // 200)

    @classmethod
    def versions(cls) -> dict[str, str]:
        torch = import_torch("siren")
        return {"torch": torch.__version__, "numpy": np.__version__,
                "cuda": str(torch.version.cuda) if torch.cuda.is_available() else "none"}

    @classmethod
    def check_available(cls) -> None:
        import_torch("siren")

    # -- rate control --------------------------------------------------------------------------
    def width_for_target(self, target_bpp: float, shape, dtype, vmin: float, vmax: float) -> tuple[int, int]:
        """Width whose file size is closest to the target (size is exact, so no training)."""
        depth, bits = self.params["depth"], self.params["weight_bits"]
        nvox = int(np.prod(shape))
        target_bytes = target_bpp * nvox / 8.0

        def size(w):
            return container_bytes(make_header(w, depth, bits, vmin, vmax), shape, dtype, w, depth, bits)

        # parameters ~ (depth-1) w^2 + (depth+4) w + 1: solve the quadratic, then step to the nearest
        per = 2.0 if bits == 16 else 1.0
        budget = max(0.0, target_bytes - size(1) + per * n_parameters(1, depth)) / per
        a, b = max(depth - 1, 0), depth + 4
        w = (budget - 1) / b if a == 0 else (-b + math.sqrt(b * b + 4 * a * max(budget - 1, 0))) / (2 * a)
        w = max(1, int(w))
        while w > 1 and size(w) > target_bytes:
            w -= 1
        while size(w + 1) <= target_bytes:
            w += 1
        best = min((w, w + 1), key=lambda x: abs(size(x) - target_bytes))
        return best, size(best)

    def params_for_target(self, target_bpp, volume, info, tolerance=0.05):
        vol = np.asarray(volume)
        vmin, vmax = float(vol.min()), float(vol.max())
        width, nbytes = self.width_for_target(float(target_bpp), vol.shape, vol.dtype, vmin, vmax)
        params = {**self.params, "width": width}
        codec = type(self)(**params)
        enc = codec.encode(vol, info)
        realised = 8.0 * file_size(enc, vol.shape, vol.dtype, self.name) / vol.size
        hit = abs(realised - target_bpp) <= tolerance * target_bpp
        if not hit:
            log.warning(
                "codec siren: target %.4g bpp not reachable within %.0f%% (granularity of width or minimum size); "
                "realised %.4g bpp at width %d", target_bpp, 100 * tolerance, realised, width)
        report = {"target_bpp": float(target_bpp), "realised_bpp": realised, "knob": "width", "knob_value": width,
                  "hit": hit, "trials": 1, "predicted_bytes": nbytes}
        if getattr(codec, "last_report", None):
            report["encode"] = codec.last_report
        self.last_report = codec.last_report
        return params, enc, report

    # -- encode ----------------------------------------------------------------------------------
    def encode(self, volume: np.ndarray, info: VolumeInfo) -> Encoded:
        p = self.params
        vol = np.asarray(volume)
        if vol.ndim != 3:
            raise VolbenchError(f"{info.name}: siren needs a 3D volume, got shape {vol.shape}")
        if vol.dtype.kind == "f" and not np.all(np.isfinite(vol)):
            raise VolbenchError(f"{info.name}: volume has NaN/Inf voxels; siren needs finite values")
        device = resolve_device(info.device)
        deterministic = device.type == "cpu"
        vmin, vmax = float(vol.min()), float(vol.max())
        rng = vmax - vmin
        shape = tuple(int(s) for s in vol.shape)
        n = vol.size
        width, depth, w0, bits = p["width"], p["depth"], float(p["w0"]), p["weight_bits"]
        t_start = time.perf_counter()
        with _torch_state(info.threads, deterministic) as torch:
            seed_everything(info.seed)
            gen_init = torch.Generator().manual_seed(int(info.seed))
            tensors = [t.to(device).requires_grad_(True) for t in init_tensors(width, depth, w0, gen_init, torch)]
            gen = torch.Generator(device=device).manual_seed(int(info.seed) + 1)
            # normalised target in [-1, 1], flat, float32, on the device
            v64 = vol.astype(np.float64, copy=False).ravel()
            t01 = (v64 - vmin) / rng if rng > 0 else np.zeros(n)
            target = torch.from_numpy((2.0 * t01 - 1.0).astype(np.float32)).to(device)
            tables = [axis_coords(s, device, torch) for s in shape]
            bs = min(p["batch_size"], n)
            n_fg, fg_idx = 0, None
            if p["foreground_fraction"] > 0:
                fg_idx = torch.nonzero(target > (2.0 * float(p["foreground_threshold"]) - 1.0)).squeeze(1)
                if fg_idx.numel() > 0:
                    n_fg = int(round(p["foreground_fraction"] * bs))
                else:
                    fg_idx = None

            def sample():
                idx = torch.randint(0, n, (bs - n_fg,), generator=gen, device=device)
                if n_fg:
                    pick = torch.randint(0, fg_idx.numel(), (n_fg,), generator=gen, device=device)
                    idx = torch.cat((idx, fg_idx[pick]))
                return idx

            history = fit(torch, tensors, target, sample, lambda idx: coords_of(idx, shape, tables, torch), w0,
                          p["iterations"], p["lr"], p["log_every"], f"siren {info.name}", True, t_start)
            stored = fold_w0(tensors, w0)
            del tensors, target
            if device.type == "cuda":
                torch.cuda.empty_cache()

        header = make_header(width, depth, bits, vmin, vmax)
        payload = pack_weights(stored, bits)
        train_seconds = time.perf_counter() - t_start
        report: dict[str, Any] = {"device": str(device), "train_seconds": train_seconds,
                                  "n_parameters": n_parameters(width, depth),
                                  "bytes": container_bytes(header, shape, vol.dtype, width, depth, bits)}
        report["bpp"] = 8.0 * report["bytes"] / n
        if p["verify"]:
            # what the decoder sees: the quantised weights, evaluated on the whole grid
            t0 = time.perf_counter()
            rec = type(self).decode(header, payload, shape, vol.dtype, device=str(device))
            err = rec.astype(np.float64).ravel() - v64
            mse01 = float(np.mean(err * err)) / (rng * rng) if rng > 0 else float(np.mean(err * err))
            report["decoded_psnr_db"] = psnr_from_mse(mse01)
            report["decode_seconds"] = time.perf_counter() - t0
            history.append({"iteration": p["iterations"], "loss": 4.0 * mse01, "psnr": report["decoded_psnr_db"],
                            "mse": mse01, "seconds": time.perf_counter() - t_start, "stage": "decoded_file"})
        self.last_report = report
        self.history = history
        if info.workdir is not None:
            write_history(info.workdir, history)
        return Encoded(header=header, payload=payload)

    # -- decode ----------------------------------------------------------------------------------
    @classmethod
    def decode(cls, header, payload, shape, dtype, device="auto"):
        # every check before anything is allocated: the header, then the payload's exact length
        # (the container's shape and dtype were checked by base.check_header)
        if len(shape) != 3:
            raise CorruptFile(f"siren decodes 3D volumes, the container says shape {tuple(shape)}")
        width, depth, bits, vmin, vmax = _parse_header(header)
        expected = payload_bytes(width, depth, bits)
        if len(payload) != expected:
            raise CorruptFile(
                f"siren payload has {len(payload)} bytes but its header (width {width}, depth {depth}, "
                f"{bits}-bit weights) needs {expected}; the file is truncated or damaged, re-run its encode job"
            )
        tensors = unpack_weights(bytes(payload), width, depth, bits)
        if not all(np.all(np.isfinite(t)) for t in tensors):
            raise CorruptFile("siren payload holds non-finite weights; the file is damaged, re-run its encode job")
        return evaluate_grid(tensors, tuple(int(s) for s in shape), vmin, vmax, dtype, resolve_device(device))
