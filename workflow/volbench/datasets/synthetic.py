"""Deterministic synthetic volumes for the embedded default config.

Every generator takes ``shape`` (Z, Y, X), ``seed`` and its own parameters and returns a
numpy array; the same arguments always give the same bytes.

With ``return_labels=True`` a generator returns ``(volume, labels, classes)`` instead: the same
volume (the labels consume no random numbers, so the volume's bytes do not depend on whether
labels are asked for), an integer label volume of the same shape (uint8, class k = value k) and
the class names (index = label value). The labels are the ground truth the generator draws,
before blur and noise:

* ``neuron``: 0 ``background``, 1 ``neurite``: voxels where the tube field (the maximum of the
  tubes' Gaussian profiles, peak 0.6-1 per segment) is above 0.5, before the optical blur.
* ``cells``: 0 ``background``, 1 ``nucleus``: voxels where the soft-edged membership
  ``1 / (1 + exp(8 (d2 - 1)))`` of any cell is > 0.5 (inside its ellipsoid, d2 < 1), before
  blur and noise.
* ``ultrasound``: ``layer_0`` (above the first boundary) and ``layer_1`` .. ``layer_<n_layers>``
  (the tissue below each wavy boundary; where boundaries cross, the later one wins, as for the
  echo levels), then ``lesion`` (the hypoechoic ellipsoid, d2 < 1) and ``lesion_rim`` (its bright
  echogenic rim, 1 <= d2 < 1.25: its own class, because its echo level, 0.95, is unlike both the
  lesion's and the layer around it), before speckle, attenuation and the slice-thickness blur.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import VolbenchError


def _grid(shape):
    return np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")


def neuron(shape=(48, 96, 96), seed=0, n_roots=3, branch_prob=0.08, step=1.0, radius=(1.2, 3.0),
           occupancy=0.10, background=200.0, peak=20000.0, noise=60.0, dtype="uint16", *, return_labels=False):
    """Sparse neuron-like volume: random-walk branching tubes, blurred, Poisson-Gaussian noise.

    Tubes are grown until about ``occupancy`` of the voxels are above 10% of the tube intensity
    (like the 10-20% of seed 001's BigNeuron neuron), then Gaussian blurred (optics) and noised.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    field = np.zeros(shape, np.float32)
    target = occupancy * field.size
    ext = np.array(shape, np.float32)
    # per-voxel accumulation of spheres along random walks
    zz, yy, xx = [np.arange(n) for n in shape]
    tips = [(ext * rng.uniform(0.3, 0.7, 3), rng.normal(size=3), rng.uniform(*radius)) for _ in range(n_roots)]
    occupied = 0
    guard = 0
    while tips and occupied < target and guard < 200000:
        guard += 1
        pos, d, r = tips.pop(0)
        d = d / (np.linalg.norm(d) + 1e-9)
        for _ in range(int(rng.integers(10, 40))):
            d = d + rng.normal(scale=0.25, size=3)
            d /= np.linalg.norm(d) + 1e-9
            pos = pos + step * d
            if np.any(pos < 0) or np.any(pos >= ext):
                break
            lo = np.maximum(np.floor(pos - r - 1).astype(int), 0)
            hi = np.minimum(np.ceil(pos + r + 2).astype(int), shape)
            sub = np.ix_(zz[lo[0]:hi[0]], yy[lo[1]:hi[1]], xx[lo[2]:hi[2]])
            d2 = ((sub[0] - pos[0]) ** 2 + (sub[1] - pos[1]) ** 2 + (sub[2] - pos[2]) ** 2)
            blob = np.exp(-d2 / (2 * (r / 1.5) ** 2)).astype(np.float32)
            region = field[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            before = int(np.count_nonzero(region > 0.1))
            np.maximum(region, blob * rng.uniform(0.6, 1.0), out=region)
            occupied += int(np.count_nonzero(region > 0.1)) - before
            if rng.random() < branch_prob:
                tips.append((pos.copy(), rng.normal(size=3), max(radius[0], r * rng.uniform(0.6, 0.95))))
        tips.append((pos.copy() if np.all((pos >= 0) & (pos < ext)) else ext * rng.uniform(0.2, 0.8, 3),
                     rng.normal(size=3), r))
    labels = (field > 0.5).astype(np.uint8) if return_labels else None
    field = ndimage.gaussian_filter(field, sigma=(1.0, 0.7, 0.7))
    vol = background + peak * field
    vol = rng.poisson(np.clip(vol / 4.0, 0, None)).astype(np.float32) * 4.0  # shot noise
    vol += rng.normal(scale=noise, size=shape).astype(np.float32)             # read noise
    return _out(_to_dtype(vol, dtype), labels, NEURON_CLASSES, return_labels)


def cells(shape=(32, 96, 96), seed=0, n_cells=40, radius=(3.0, 10.0), background=300.0,
          peak=(3000.0, 30000.0), noise=80.0, dtype="uint16", *, return_labels=False):
    """Confocal cells/nuclei: ellipsoidal blobs of varied size, brightness and texture.

    Labels (``return_labels``): 1 ``nucleus`` where any cell's soft-edged membership is > 0.5."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    z, y, x = _grid(shape)
    vol = np.full(shape, background, np.float32)
    labels = np.zeros(shape, np.uint8) if return_labels else None
    for _ in range(int(n_cells)):
        c = np.array(shape) * rng.uniform(0.05, 0.95, 3)
        r = rng.uniform(*radius) * rng.uniform(0.7, 1.3, 3)
        r[0] *= 0.6  # axial extent a bit smaller in voxels (anisotropic sampling)
        d2 = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        inside = 1.0 / (1.0 + np.exp(np.clip((d2 - 1.0) * 8.0, -50, 50)))  # soft edge
        if labels is not None:
            labels[inside > 0.5] = 1
        bright = rng.uniform(*peak)
        vol += (bright * inside * (0.85 + 0.15 * np.cos(3 * d2 + rng.uniform(0, 6)))).astype(np.float32)
    vol = ndimage.gaussian_filter(vol, sigma=(1.2, 0.8, 0.8))
    vol += rng.normal(scale=noise, size=shape).astype(np.float32)
    return _out(_to_dtype(vol, dtype), labels, CELLS_CLASSES, return_labels)


def ultrasound(shape=(32, 96, 96), seed=0, n_layers=4, lesion_radius=0.18, slice_thickness=1.5,
               speckle=0.5, dtype="uint8", *, return_labels=False):
    """Ultrasound-like: layered tissue, a hypoechoic lesion, multiplicative speckle, and a
    finite slice thickness (Gaussian blur of ``slice_thickness`` voxels along the scan axis Z).

    Labels (``return_labels``): ``layer_0`` .. ``layer_<n_layers>``, ``lesion``, ``lesion_rim``
    (ultrasound_classes(n_layers))."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    z, y, x = _grid(shape)
    Z, Y, X = shape
    # depth is Y (rows), layers are wavy boundaries in depth
    echo = np.full(shape, 0.25, np.float32)
    labels = np.zeros(shape, np.uint8) if return_labels else None
    bounds = np.sort(rng.uniform(0.15, 0.9, n_layers)) * Y
    levels = rng.uniform(0.3, 0.9, n_layers)
    for k, (b, lv) in enumerate(zip(bounds, levels), start=1):
        wave = b + 3.0 * np.sin(x / X * 2 * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 6)) \
                 + 2.0 * np.sin(z / max(Z, 1) * 2 * np.pi + rng.uniform(0, 6))
        echo = np.where(y > wave, lv, echo).astype(np.float32)
        if labels is not None:
            labels[y > wave] = k
    c = np.array([Z * 0.5, Y * 0.6, X * 0.5])
    rad = lesion_radius * np.array([Z, Y, X])
    d2 = ((z - c[0]) / rad[0]) ** 2 + ((y - c[1]) / rad[1]) ** 2 + ((x - c[2]) / rad[2]) ** 2
    echo = np.where(d2 < 1.0, 0.08, echo)
    echo = np.where((d2 >= 1.0) & (d2 < 1.25), 0.95, echo)  # bright rim
    if labels is not None:
        n = len(bounds)
        labels[d2 < 1.0] = n + 1                  # lesion
        labels[(d2 >= 1.0) & (d2 < 1.25)] = n + 2  # its bright rim
    # speckle: Rayleigh-distributed multiplicative noise from a correlated complex field
    re = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), (0.5, 1.2, 0.8))
    im = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), (0.5, 1.2, 0.8))
    env = np.sqrt(re ** 2 + im ** 2)
    env /= env.mean() + 1e-9
    img = echo * ((1 - speckle) + speckle * env)
    img *= np.exp(-y / (2.5 * Y))  # depth attenuation
    if slice_thickness > 0:
        img = ndimage.gaussian_filter1d(img, sigma=slice_thickness, axis=0)
    img = 255.0 * img / max(float(img.max()), 1e-9)
    return _out(_to_dtype(img, dtype), labels, ultrasound_classes(n_layers) if return_labels else None,
                return_labels)


def _to_dtype(vol: np.ndarray, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        return np.clip(np.rint(vol), info.min, info.max).astype(dt)
    return vol.astype(dt)


NEURON_CLASSES = ["background", "neurite"]
CELLS_CLASSES = ["background", "nucleus"]


def ultrasound_classes(n_layers: int = 4) -> list[str]:
    """The ultrasound generator's class names, index = label value."""
    return [f"layer_{k}" for k in range(int(n_layers) + 1)] + ["lesion", "lesion_rim"]


def _out(vol, labels, classes, return_labels):
    if not return_labels:
        return vol
    return vol, labels, list(classes)


GENERATORS = {"neuron": neuron, "cells": cells, "ultrasound": ultrasound}


def _call(spec: dict, dataset: str, return_labels: bool):
    spec = dict(spec)
    name = spec.pop("generator", None)
    if name not in GENERATORS:
        raise VolbenchError(f"dataset {dataset}: unknown synthetic generator {name!r}; use one of {sorted(GENERATORS)}")
    if "return_labels" in spec:
        raise VolbenchError(f"dataset {dataset}: `return_labels` is not a generator parameter; the dataset's "
                            "`labels:` (true/false) says whether its labels are written")
    try:
        return GENERATORS[name](**spec, return_labels=return_labels)
    except TypeError as exc:
        raise VolbenchError(f"dataset {dataset}: bad parameters for generator {name}: {exc}") from None


def generate(spec: dict, dataset: str = "?") -> np.ndarray:
    """The volume of a `synthetic:` config entry."""
    return _call(spec, dataset, False)


def generate_with_labels(spec: dict, dataset: str = "?") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(volume, labels, class names) of a `synthetic:` config entry; the volume is generate()'s."""
    return _call(spec, dataset, True)
