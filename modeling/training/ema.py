"""Exponential moving average of a model's weights, checkpointed with the run."""

from __future__ import annotations

import contextlib

import torch


class WeightEMA:
    """Exponential moving average of the trainable weights and the BatchNorm statistics.

    Averaging the last few hundred steps smooths the noise of small-batch contrastive training. Frozen weights
    (the cached text tower) are skipped. `state_dict`/`load_state_dict` let Accelerate checkpoint it.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.names += [n for n, b in model.named_buffers() if b.dtype.is_floating_point]
        tensors = self._tensors(model)
        self.shadow = {n: tensors[n].detach().clone() for n in self.names}
        self.steps = 0

    def _tensors(self, model) -> dict:
        return {**dict(model.named_parameters()), **dict(model.named_buffers())}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))  # warm-up: early weights fade fast
        tensors = self._tensors(model)
        for n in self.names:
            self.shadow[n].lerp_(tensors[n].detach(), 1.0 - decay)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into `model`."""
        tensors = self._tensors(model)
        backup = {n: tensors[n].detach().clone() for n in self.names}
        with torch.no_grad():
            for n in self.names:
                tensors[n].copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n in self.names:
                    tensors[n].copy_(backup[n])

    def state_dict(self) -> dict:
        return {"steps": self.steps, **{f"shadow.{n}": t for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        for n in self.names:
            self.shadow[n].copy_(state[f"shadow.{n}"])


__all__ = ["WeightEMA"]
