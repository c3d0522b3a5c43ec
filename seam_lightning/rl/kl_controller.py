"""The KL coefficient β: fixed, or adapted towards a target KL (Ziegler et al. 2019, §2.2)."""

from __future__ import annotations

from typing import Any


class KLController:
    """A fixed β. Subclasses adapt it; ``state_dict`` makes either resumable."""

    def __init__(self, value: float):
        if value < 0:
            raise ValueError(f"the KL coefficient must be >= 0, got {value}")
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Observe the mean sequence KL of a batch of ``n_steps`` samples (a fixed β ignores it)."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(KLController):
    """β ← β · (1 + clip(KL/KL_target − 1, −0.2, 0.2) · n / horizon).

    A proportional controller: β grows while the policy drifts further than the
    target from the reference and shrinks while it stays closer, at most 20% of
    ``n / horizon`` per update.
    """

    def __init__(self, value: float, target: float, horizon: int):
        super().__init__(value)
        if target <= 0 or horizon <= 0:
            raise ValueError(f"kl_target and kl_horizon must be > 0, got {target} and {horizon}")
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


def kl_controller(value: float, target: float | None, horizon: int) -> KLController:
    """The adaptive controller when a target KL is given, else a fixed β."""
    return KLController(value) if target is None else AdaptiveKLController(value, target, horizon)
