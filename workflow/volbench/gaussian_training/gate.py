"""TOPS-Gate (seed 001 sec. 3.2): a coordinate MLP with Fourier features, pre-trained with binary
cross-entropy on thresholded occupancy labels, then frozen; its >= tau set is where the training
loss is evaluated. The plain threshold mask is the simple alternative."""

from __future__ import annotations

import math

import torch


class TopsGate(torch.nn.Module):
    """g(x) = sigmoid(MLP([x, gamma(x)])), gamma(x) = [sin(2^k pi x), cos(2^k pi x)]_{k<L},
    MLP [hidden]*depth + [1] with ReLU (seed 001 eqs. 5-6; L = 4, [64, 64, 64, 1])."""

    def __init__(self, bands: int = 4, hidden: int = 64, depth: int = 3):
        super().__init__()
        self.bands = int(bands)
        dims = [3 + 6 * self.bands] + [int(hidden)] * int(depth)
        layers: list[torch.nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(dims[-1], 1))
        self.mlp = torch.nn.Sequential(*layers)
        freqs = (2.0 ** torch.arange(self.bands, dtype=torch.float32)) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        xf = x[..., None] * self.freqs  # (M,3,L)
        return torch.cat([x, torch.sin(xf).flatten(1), torch.cos(xf).flatten(1)], dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.encode(x))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def unit_coords(shape, device) -> torch.Tensor:
    """(D*H*W, 3) voxel coordinates normalised to [0, 1] per axis (z, y, x)."""
    axes = [torch.linspace(0.0, 1.0, n, device=device) if n > 1 else torch.zeros(1, device=device) for n in shape]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([zz, yy, xx], -1).reshape(-1, 3)


def train_gate(volume01: torch.Tensor, tau_occ: float, iterations: int, lr: float, batch: int,
               bands: int, hidden: int, generator: torch.Generator) -> tuple[TopsGate, dict]:
    """Pre-train the gate on labels y = [V > tau_occ] (eq. 7); returns the frozen gate and stats."""
    device = volume01.device
    coords = unit_coords(volume01.shape, device)
    labels = (volume01.reshape(-1) > tau_occ).float()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        gate = TopsGate(bands=bands, hidden=hidden).to(device)
    opt = torch.optim.Adam(gate.parameters(), lr=lr)
    lossf = torch.nn.BCEWithLogitsLoss()
    m = coords.shape[0]
    bsz = min(int(batch), m)
    last = float("nan")
    for _ in range(int(iterations)):
        idx = torch.randint(0, m, (bsz,), generator=generator, device="cpu").to(device)
        loss = lossf(gate.logits(coords[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = float(loss.detach())
    for p in gate.parameters():
        p.requires_grad_(False)
    gate.eval()
    stats = {"gate_parameters": int(sum(p.numel() for p in gate.parameters())), "gate_bce": last,
             "occupied_labels": float(labels.mean())}
    return gate, stats


@torch.no_grad()
def gate_mask(gate: TopsGate, shape, tau: float, device, chunk: int = 1 << 20) -> torch.Tensor:
    coords = unit_coords(shape, device)
    out = torch.empty(coords.shape[0], dtype=torch.bool, device=device)
    for i in range(0, coords.shape[0], chunk):
        out[i:i + chunk] = gate(coords[i:i + chunk]) >= tau
    return out.reshape(tuple(shape))


def occupancy_mask(kind: str, volume01: torch.Tensor, params: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """The occupied set O: gate "mlp" (TOPS-Gate), "threshold" (V > tau_occ) or "none" (all)."""
    if kind == "none":
        return torch.ones_like(volume01, dtype=torch.bool), {"occupied_fraction": 1.0}
    if kind == "threshold":
        mask = volume01 > float(params["tau_occ"])
        stats: dict = {}
    elif kind == "mlp":
        gate, stats = train_gate(volume01, float(params["tau_occ"]), int(params["gate_iterations"]),
                                 float(params["gate_lr"]), int(params["gate_batch"]), int(params["gate_bands"]),
                                 int(params["gate_hidden"]), generator)
        mask = gate_mask(gate, volume01.shape, float(params["gate_tau"]), volume01.device)
    else:  # pragma: no cover - check_params rejects it
        raise ValueError(kind)
    if not bool(mask.any()):  # a blank volume: fall back to every voxel
        mask = torch.ones_like(mask)
    stats["occupied_fraction"] = float(mask.float().mean())
    return mask, stats
