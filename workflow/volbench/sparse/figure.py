"""The held-out slices figure: one row per fraction, the ground-truth slice then each method's
prediction of it, with the slice's PSNR.

The slice shown in a row is the held-out slice farthest (in z) from every training slice of that
split, the hardest one (ties: the one nearest the middle of the stack); every method's panel of
the row is that same slice. Grey levels: the original volume's min..max for every panel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io, metrics
from . import run


def hardest_slice(train_z, test_z, depth: int) -> int:
    """The held-out z farthest from the training slices (ties: nearest the middle)."""
    train = np.asarray(train_z)
    best = max(test_z, key=lambda z: (int(np.min(np.abs(train - z))), -abs(2 * int(z) - (depth - 1))))
    return int(best)


def draw(volume_path, score_files, method_dirs: dict[str, dict[str, str]], out_base) -> list[Path]:
    """score_files: the dataset's scores.json per fraction; method_dirs: {fraction label: {method:
    folder}}. Writes out_base.png and .pdf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol = metrics.open_volume(volume_path)
    vmin, vmax = float(np.min(vol)), float(np.max(vol))
    scores = [io.read_json(f) for f in score_files]
    labels = list(method_dirs)
    names = list(dict.fromkeys(m for s in scores for m in s.get("method_order") or s["methods"]))
    ncol = 1 + len(names)
    fig, axes = plt.subplots(len(scores), ncol, figsize=(1.9 * ncol, 2.1 * len(scores) + 0.4), squeeze=False)
    for row, (s, lab) in enumerate(zip(scores, labels)):
        z = hardest_slice(s["train_z"], s["test_z"], s["depth"])
        k = s["test_z"].index(z)
        gap = int(np.min(np.abs(np.asarray(s["train_z"]) - z)))
        panels = [("ground truth", np.asarray(vol[z]), None)]
        for m in names:
            rec = s["methods"].get(m, {})
            title = rec.get("display_name") or m
            if rec.get("status") == "ok":
                pred = run.read_prediction(method_dirs[lab][m])[k]
                panels.append((title, pred, rec["psnr"][k]))
            else:
                panels.append((title, None, None))
        for col, (title, img, psnr) in enumerate(panels):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.text(0.5, 0.5, "failed", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(title if psnr is None else f"{title}\n{psnr:.2f} dB", fontsize=7)
        axes[row][0].set_ylabel(f"{100 * s['fraction']:g} %: z = {z}\n({gap} from training)", fontsize=7)
    fig.suptitle(f"{scores[0]['dataset']}: held-out slices (the one farthest from training per fraction)", fontsize=9)
    fig.tight_layout()
    out = []
    for ext in ("png", "pdf"):
        path = Path(f"{out_base}.{ext}")
        io.atomic_write(path, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=130))
        out.append(path)
    plt.close(fig)
    return out
