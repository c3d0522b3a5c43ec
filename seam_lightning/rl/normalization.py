"""Running reward statistics, for normalising rewards across PPO steps."""

from __future__ import annotations

from typing import Any

from torch import Tensor


class RunningMoments:
    """Mean and standard deviation of every value seen so far (Chan et al.'s parallel update).

    Batch statistics are merged exactly, so the result does not depend on how the
    stream was split into batches; ``state_dict`` makes it resumable.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0  # population variance
        self.count = 0

    @property
    def std(self) -> float:
        return self.var**0.5

    def update(self, values: Tensor) -> None:
        values = values.detach().double().flatten()
        n = values.numel()
        if n == 0:
            return
        batch_mean = values.mean().item()
        batch_var = values.var(unbiased=False).item()
        total = self.count + n
        delta = batch_mean - self.mean
        if self.count == 0:
            self.mean, self.var = batch_mean, batch_var
        else:
            m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
            self.mean += delta * n / total
            self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), int(state["count"])
