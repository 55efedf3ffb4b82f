"""Integration rules on [0, 1]: nodes alpha and weights w (sum 1) for the IG path integral."""
from __future__ import annotations

import numpy as np
import torch

from kneuron.errors import ConfigError

RULES = ("left", "right", "linspace", "midpoint", "trapezoid", "gauss")


def nodes(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``left``: i/N, i=0..N-1 (Dai et al.'s and the AMIG code's Riemann sum); ``right``: i/N, i=1..N
    (the paper's Eq. 4); ``linspace``: linspace(0, 1, N) with weights 1/N (the knowledge-neurons
    package); ``midpoint``; ``trapezoid``; ``gauss``: Gauss-Legendre."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    n = steps
    if rule == "left":
        a, w = np.arange(n) / n, np.full(n, 1 / n)
    elif rule == "right":
        a, w = np.arange(1, n + 1) / n, np.full(n, 1 / n)
    elif rule == "linspace":
        a, w = np.linspace(0, 1, n), np.full(n, 1 / n)
    elif rule == "midpoint":
        a, w = (np.arange(n) + 0.5) / n, np.full(n, 1 / n)
    elif rule == "trapezoid":
        if n < 2:
            raise ConfigError("the trapezoid rule needs steps >= 2")
        a = np.linspace(0, 1, n)
        w = np.full(n, 1 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
    elif rule == "gauss":
        x, wx = np.polynomial.legendre.leggauss(n)
        a, w = (x + 1) / 2, wx / 2
    else:
        raise ConfigError(f"unknown integration rule {rule!r}; choose one of {', '.join(RULES)}")
    return torch.tensor(a, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)
