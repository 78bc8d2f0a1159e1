"""A set of Gaussians as named parameter tensors with one Adam optimiser, and the tensor surgery
(prune / append) densification needs, keeping Adam's moments aligned with the rows."""

from __future__ import annotations

import torch


class GaussianSet:
    def __init__(self, tensors: dict[str, torch.Tensor], lrs: dict[str, float], eps: float = 1e-8):
        self.params = {k: torch.nn.Parameter(v.detach().clone().contiguous()) for k, v in tensors.items()}
        self.base_lr = dict(lrs)
        self.opt = torch.optim.Adam(
            [{"params": [p], "lr": float(lrs[k]), "name": k} for k, p in self.params.items()],
            betas=(0.9, 0.999), eps=eps,
        )

    def __getitem__(self, key: str) -> torch.nn.Parameter:
        return self.params[key]

    @property
    def n(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def set_lr_factor(self, factor: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.base_lr[group["name"]] * factor

    def _swap(self, fn_param, fn_state) -> None:
        for group in self.opt.param_groups:
            old = group["params"][0]
            new = torch.nn.Parameter(fn_param(group["name"], old.detach()).contiguous())
            state = self.opt.state.pop(old, None)
            if state is not None:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key] = fn_state(state[key]).contiguous()
                self.opt.state[new] = state
            group["params"][0] = new
            self.params[group["name"]] = new

    def keep(self, mask: torch.Tensor) -> None:
        """Keep the rows where mask is True."""
        self._swap(lambda name, t: t[mask], lambda s: s[mask])

    def append(self, tensors: dict[str, torch.Tensor]) -> None:
        """Append rows (new rows start with zero Adam moments)."""
        self._swap(lambda name, t: torch.cat([t, tensors[name].to(t)], 0),
                   lambda s: torch.cat([s, torch.zeros((len(next(iter(tensors.values()))),) + s.shape[1:],
                                                       dtype=s.dtype, device=s.device)], 0))

    def detached(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.params.items()}


def cap_growth(clone: torch.Tensor, split: torch.Tensor, score: torch.Tensor, room: int):
    """Keep at most `room` of the clone / split candidates (boolean masks), those with the highest
    `score` (each clone or split adds one Gaussian); returns the capped masks."""
    cand = torch.nonzero(clone | split).reshape(-1)
    if cand.numel() > max(room, 0):
        keep = cand[torch.argsort(score[cand], descending=True)[:max(room, 0)]]
        sel = torch.zeros(clone.shape[0], dtype=torch.bool, device=score.device)
        sel[keep] = True
        clone, split = clone & sel, split & sel
    return clone, split
