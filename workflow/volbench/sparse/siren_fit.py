"""SIREN trained on the training slices' voxels, evaluated at the held-out slices.

The network, its initialisation and forward pass are the SIREN codec's
(volbench.codecs.siren: ``init_tensors``, ``mlp``, ``axis_coords``, ``coords_of``): sine layers
on (z, y, x) in [-1, 1]^3, where z runs over the WHOLE volume's depth, so a training slice sits at
its true position and a held-out slice between its neighbours. The codec trains on random voxels
of the whole volume, which would include the test slices; here each Adam step draws its batch
from the training slices' voxels only. Intensities are scaled to [-1, 1] by the training slices'
min and max. The prediction is the network evaluated (float32, no weight quantisation: this is
not a compression run) at every voxel of the held-out slices.

Parameters (``defaults``): the codec's demo network widened to 64 units (3 sine layers), 600
Adam steps of 4096 voxels, lr 1e-3, w0 = 30 (SIREN's). A few seconds on 2 CPU cores for a
24x96x96 volume.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from ..errors import VolbenchError
from ..history import write as write_history
from ..torchenv import import_torch, resolve_device, seed_everything
from .methods import SparseMethod


@contextmanager
def _torch_threads(threads: int, deterministic: bool):
    torch = import_torch("siren")
    old = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(max(1, int(threads)))
        if deterministic:
            torch.use_deterministic_algorithms(True)
        yield torch
    finally:
        torch.set_num_threads(old[0])
        torch.use_deterministic_algorithms(old[1])


class SirenSparse(SparseMethod):
    name = "siren"
    display_name = "SIREN"
    family = "neural"
    table_order = 50
    trains = True
    uses_gpu = True
    defaults: ClassVar[dict[str, Any]] = {
        "width": 64, "depth": 3, "iterations": 600, "batch_size": 4096, "lr": 1e-3, "w0": 30.0,
        "log_every": None, "progress": True,
    }

    def check_params(self):
        p = self.params
        for k in ("width", "depth", "iterations", "batch_size"):
            if not isinstance(p[k], (int, float)) or int(p[k]) != p[k] or int(p[k]) < 1:
                raise VolbenchError(f"sparse method siren: {k} must be a positive integer, got {p[k]!r}")
            p[k] = int(p[k])
        if not float(p["lr"]) > 0 or not float(p["w0"]) > 0:
            raise VolbenchError("sparse method siren: lr and w0 must be positive")
        if p["log_every"] is None:
            p["log_every"] = max(1, p["iterations"] // 100)

    @classmethod
    def versions(cls):
        torch = import_torch("siren")
        return {**super().versions(), "torch": torch.__version__,
                "cuda": str(torch.version.cuda) if torch.cuda.is_available() else "none"}

    def reconstruct(self, train, ctx):
        from ..codecs.siren import axis_coords, coords_of, fit, init_tensors

        p = self.params
        device = resolve_device(ctx.device)
        D, H, W = train.shape
        n_train = len(train.z)
        lo, hi = float(train.slices.min()), float(train.slices.max())
        scale = (hi - lo) or 1.0
        width, depth, w0 = p["width"], p["depth"], float(p["w0"])
        t0 = time.perf_counter()
        with _torch_threads(ctx.threads, device.type == "cpu") as torch:
            seed_everything(ctx.seed)
            tensors = [t.to(device).requires_grad_(True)
                       for t in init_tensors(width, depth, w0, torch.Generator().manual_seed(int(ctx.seed)), torch)]
            gen = torch.Generator(device=device).manual_seed(int(ctx.seed) + 1)
            t01 = (train.slices.astype(np.float64) - lo) / scale
            target = torch.from_numpy((2.0 * t01 - 1.0).astype(np.float32).ravel()).to(device)
            z_all, y_tab, x_tab = (axis_coords(s, device, torch) for s in (D, H, W))
            z_train = z_all[torch.from_numpy(train.z).to(device)]  # the training slices' true z
            n = target.numel()
            bs = min(p["batch_size"], n)
            history = fit(torch, tensors, target,
                          lambda: torch.randint(0, n, (bs,), generator=gen, device=device),
                          lambda idx: coords_of(idx, (n_train, H, W), (z_train, y_tab, x_tab), torch), w0,
                          p["iterations"], p["lr"], p["log_every"], f"siren {train.dataset} {train.label}",
                          p["progress"], t0)
            with torch.no_grad():
                pred = _evaluate(torch, tensors, w0, z_all, (y_tab, x_tab), train.test_z, device)
                own = _evaluate(torch, tensors, w0, z_all, (y_tab, x_tab), train.z, device)
        if ctx.workdir is not None:
            write_history(ctx.workdir, history)
        self.train_fit = (own + 1.0) / 2.0 * scale + lo  # its own training slices (fit.json: fit_psnr)
        return (pred + 1.0) / 2.0 * scale + lo


def _evaluate(torch, tensors, w0: float, z_all, yx_tables, zs, device, chunk: int = 65536) -> np.ndarray:
    """The network at every voxel of the axial slices zs: (len(zs), H, W) float64 on [-1, 1]."""
    from ..codecs.siren import coords_of, mlp

    H, W = (len(t) for t in yx_tables)
    tables = (z_all[torch.from_numpy(np.asarray(zs, dtype=np.int64)).to(device)], *yx_tables)
    n = len(zs) * H * W
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, chunk):
        idx = torch.arange(s, min(n, s + chunk), device=device)
        y = mlp(coords_of(idx, (len(zs), H, W), tables, torch), tensors, scale=w0)
        out[s:s + len(idx)] = y.double().cpu().numpy()
    return out.reshape(len(zs), H, W)
