"""Training progress: a tqdm bar on stderr (the rule's log) and the history.csv (volbench.history)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import history
from ..metrics import psnr_from_mse


class Progress:
    def __init__(self, desc: str, total: int, workdir=None, enabled: bool = True):
        from tqdm import tqdm

        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.workdir = Path(workdir) if workdir else None
        self.bar = tqdm(total=int(total), desc=desc, file=sys.stderr, disable=not enabled,
                        mininterval=1.0, dynamic_ncols=True, leave=True)

    def step(self, n: int = 1) -> None:
        self.bar.update(n)

    def log(self, iteration: int, loss: float, mse: float, n_gaussians: int, **extra) -> dict:
        psnr = psnr_from_mse(mse)
        row = {"iteration": int(iteration), "loss": float(loss), "psnr": psnr, "mse": float(mse),
               "n_gaussians": int(n_gaussians), "seconds": time.perf_counter() - self.t0, "stage": "train",
               **extra}
        self.rows.append(row)
        self.bar.set_postfix(loss=f"{loss:.3g}", psnr=f"{psnr:.2f}", n=n_gaussians, refresh=False)
        return row

    def close(self) -> None:
        self.bar.close()
        if self.workdir is not None and self.rows:
            history.write(self.workdir, self.rows)

    def seconds(self) -> float:
        return time.perf_counter() - self.t0
