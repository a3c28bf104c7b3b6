"""Customers drawn from the BG/NBD and Gamma-Gamma processes with known parameters, for the CLV
tests: the fit must find what generated them, and agree with the lifetimes library on them."""

from __future__ import annotations

import numpy as np

TRUE_BG_NBD = {"r": 0.6, "alpha": 25.0, "a": 0.8, "b": 2.5}  # alpha in days
TRUE_GAMMA_GAMMA = {"p": 6.0, "q": 4.0, "v": 15.0}


def bg_nbd_customers(n: int, seed: int = 7, r: float = TRUE_BG_NBD["r"], alpha: float = TRUE_BG_NBD["alpha"],
                     a: float = TRUE_BG_NBD["a"], b: float = TRUE_BG_NBD["b"], horizon: float = 90.0):
    """(x, t_x, T, orders in the next `horizon` days) per customer, T uniform over 100..400 days.

    While alive a customer orders at rate λ ~ Gamma(r, α); after each repeat order they drop out
    with probability p ~ Beta(a, b) (Fader, Hardie and Lee 2005): a first-time buyer is alive."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(100, 400, n).round(2)
    x, t_x, future = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i] + horizon:
                break
            if t > T[i]:
                future[i] += 1
            else:
                x[i] += 1
                t_x[i] = round(t, 2)
            if rng.random() < p[i]:
                break
    return x, t_x, T, future


def order_values(x: np.ndarray, seed: int = 11, p: float = TRUE_GAMMA_GAMMA["p"], q: float = TRUE_GAMMA_GAMMA["q"],
                 v: float = TRUE_GAMMA_GAMMA["v"]) -> np.ndarray:
    """The mean of x order values per customer (NaN without one): z ~ Gamma(p, ν), ν ~ Gamma(q, v)."""
    rng = np.random.default_rng(seed)
    nu = rng.gamma(q, 1 / v, len(x))
    return np.array([rng.gamma(p, 1 / nu[i], int(k)).mean() if k > 0 else np.nan for i, k in enumerate(x)])
