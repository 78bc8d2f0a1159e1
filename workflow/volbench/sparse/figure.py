"""The held-out slices figure: one row per fraction, the ground-truth slice then each method's
prediction of it, with the slice's PSNR.

The slice shown in a row is the held-out slice farthest (in z) from every training slice of that
split, the hardest one (ties: the one nearest the middle of the stack); every method's panel of
the row is that same slice. Grey levels: the original volume's min..max for every panel.

Where the dataset has a label volume, the segmentation is outlined in colour (one colour per
class, background not drawn): the true labels on the ground-truth panel, and on the panels of the
methods that render semantic maps (seed 004 eq. 2) their predicted classes (argmax); the panel
title then adds the mean Dice over the foreground classes on the held-out slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import io, metrics
from . import run


def _save(fig, out_base) -> list[Path]:
    """out_base.png and .pdf (atomically), then close the figure."""
    import matplotlib.pyplot as plt

    out = []
    for ext in ("png", "pdf"):
        path = Path(f"{out_base}.{ext}")
        io.atomic_write(path, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=130))
        out.append(path)
    plt.close(fig)
    return out


def hardest_slice(train_z, test_z, depth: int) -> int:
    """The held-out z farthest from the training slices (ties: nearest the middle)."""
    train = np.asarray(train_z)
    best = max(test_z, key=lambda z: (int(np.min(np.abs(train - z))), -abs(2 * int(z) - (depth - 1))))
    return int(best)


def outline(ax, lab: np.ndarray, n_classes: int) -> None:
    """Contours of every non-background class of a label slice, one colour per class (tab10)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    for k in range(1, n_classes):
        m = (lab == k).astype(float)
        if m.any() and not m.all():
            ax.contour(m, levels=[0.5], colors=[cmap((k - 1) % 10)], linewidths=0.6)


def draw(volume_path, score_files, method_dirs: dict[str, dict[str, str]], out_base, labels_path=None) -> list[Path]:
    """score_files: the dataset's scores.json per fraction; method_dirs: {fraction label: {method:
    folder}}. Writes out_base.png and .pdf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vol = metrics.open_volume(volume_path)
    vmin, vmax = float(np.min(vol)), float(np.max(vol))
    labvol = io.read_volume(labels_path) if labels_path else None
    scores = [io.read_json(f) for f in score_files]
    labels = list(method_dirs)
    names = list(dict.fromkeys(m for s in scores for m in s.get("method_order") or s["methods"]))
    ncol = 1 + len(names)
    # at most ~15 in (about 2,000 px at 130 dpi) wide, however many methods
    w = min(1.9, 15.3 / ncol)
    fig, axes = plt.subplots(len(scores), ncol, figsize=(w * ncol, (w + 0.2) * len(scores) + 0.4), squeeze=False)
    for row, (s, lab) in enumerate(zip(scores, labels)):
        z = hardest_slice(s["train_z"], s["test_z"], s["depth"])
        k = s["test_z"].index(z)
        gap = int(np.min(np.abs(np.asarray(s["train_z"]) - z)))
        K = len(s.get("classes") or [])
        panels = [("ground truth", np.asarray(vol[z]), None, labvol[z] if labvol is not None and K else None)]
        for m in names:
            rec = s["methods"].get(m, {})
            title = rec.get("display_name") or m
            if rec.get("status") == "ok":
                pred = run.read_prediction(method_dirs[lab][m])[k]
                seg = None
                renders = run.read_renders(method_dirs[lab][m]) if K else None
                if renders and renders.get("axial", {}).get("semantics") is not None:
                    seg = np.argmax(renders["axial"]["semantics"][k], axis=0)
                    fg = [d for d in (rec.get("dice") or [])[1:] if d is not None and np.isfinite(d)]
                    if fg:
                        title = (title, f"Dice {np.mean(fg):.2f}")
                panels.append((title, pred, rec["psnr"][k], seg))
            else:
                panels.append((title, None, None, None))
        for col, (title, img, psnr, seg) in enumerate(panels):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None:
                ax.text(0.5, 0.5, "failed", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
                if seg is not None:
                    outline(ax, seg, K)
            name, extra = title if isinstance(title, tuple) else (title, "")
            ax.set_title(name if psnr is None else f"{name}\n{psnr:.2f} dB" + (f", {extra}" if extra else ""),
                         fontsize=7)
        axes[row][0].set_ylabel(f"{100 * s['fraction']:g} %: z = {z}\n({gap} from training)", fontsize=7)
    note = " (coloured: segmentation outlines)" if labvol is not None else ""
    fig.suptitle(f"{scores[0]['dataset']}: held-out slices (the one farthest from training per fraction){note}",
                 fontsize=9)
    fig.tight_layout()
    return _save(fig, out_base)


def training_series(score: dict, dirs: dict[str, str]) -> dict[str, tuple[list, list, float]]:
    """{display name: (logged steps, training-slice PSNRs, held-out mean PSNR)} of the split's
    trained methods that finished and left a history.csv."""
    from .. import history

    out = {}
    for m in score.get("method_order") or list(score["methods"]):
        rec = score["methods"].get(m, {})
        path = Path(dirs.get(m, "")) / "history.csv"
        if rec.get("status") != "ok" or not rec.get("trains") or not path.is_file():
            continue
        h = history.read(path)
        h = h[(h["stage"].fillna("train") == "train") & h["psnr"].notna()]
        if len(h):
            out[rec.get("display_name") or m] = ([float(v) for v in h["iteration"]], [float(v) for v in h["psnr"]],
                                                  float(rec["psnr_mean"]))
    return out


def draw_training(score_files, method_dirs: dict[str, dict[str, str]], out_base) -> list[Path]:
    """The trained methods' curves against their held-out result: one panel per fraction; per
    method its training-slice PSNR over the steps (history.csv: the slices of each logged step, dB
    on the training slices' range, as fit PSNR) and, at its last step, its held-out PSNR (a dot on
    the volume's range, as the table). The vertical gap is what the method fails to carry from the
    training slices to the held-out ones; cubic interpolation's held-out PSNR is the dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [io.read_json(f) for f in score_files]
    labels = list(method_dirs)
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores) + 1.6, 3.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    handles = {}
    series = [training_series(s, method_dirs[lab]) for s, lab in zip(scores, labels)]
    colour = {n: cmap(i % 10) for i, n in enumerate(dict.fromkeys(n for ser in series for n in ser))}
    for col, (s, ser) in enumerate(zip(scores, series)):
        ax = axes[0][col]
        for name, (it, ps, held) in ser.items():  # one colour per method in every panel
            (line,) = ax.plot(it, ps, color=colour[name], lw=1.0, label=name)
            ax.plot([it[-1]], [held], "o", color=colour[name], ms=6, mec="black", mew=0.5)
            handles[name] = line
        cub = next((r.get("psnr_mean") for r in s["methods"].values()
                    if r.get("method_type") == "cubic" and r.get("status") == "ok"), None)
        if cub is not None:
            handles["cubic interpolation (held-out)"] = ax.axhline(cub, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{100 * s['fraction']:g} % of the slices ({s['n_train']} of {s['depth']})", fontsize=9)
        ax.grid(alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(0.84, 0.5), fontsize=7,
               title="line: training slices\ndot: held-out slices", title_fontsize=7)
    fig.suptitle(f"{scores[0]['dataset']}: training curves vs held-out PSNR", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    return _save(fig, out_base)
