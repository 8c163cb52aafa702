"""Write ``prices.csv``: deterministic synthetic daily closes for the risk notebook.

Ten stocks in five sectors over five years of business days (2020-2024). Returns
follow a factor model a risk analyst would recognise: a market factor with
volatility clustering (GARCH(1,1)) and a crash regime, sector factors, and
Student-t idiosyncratic noise, so the data has fat tails, correlation that rises in
stress, and real drawdowns. Same seed, same file: ``python make_prices.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20240101
SECTORS = {"TECH": ("TECH_A", "TECH_B"), "FIN": ("FIN_A", "FIN_B"), "ENERGY": ("ENGY_A", "ENGY_B"),
           "HEALTH": ("HLTH_A", "HLTH_B"), "UTIL": ("UTIL_A", "UTIL_B")}
BETAS = {"TECH": 1.3, "FIN": 1.1, "ENERGY": 0.9, "HEALTH": 0.7, "UTIL": 0.5}
PATH = Path(__file__).with_name("prices.csv")


def make_prices(seed: int = SEED) -> pd.DataFrame:
    """Daily closes, one column per stock, indexed by business day."""
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2020-01-01", "2024-12-31")
    t = len(days)
    # market factor: GARCH(1,1) variance, Student-t shocks, a stressed stretch in year two
    omega, alpha, beta = 2e-6, 0.09, 0.89
    var = np.empty(t)
    mkt = np.empty(t)
    var[0] = omega / (1 - alpha - beta)
    shocks = rng.standard_t(5, t) / np.sqrt(5 / 3)
    for i in range(t):
        if i:
            var[i] = omega + alpha * mkt[i - 1] ** 2 + beta * var[i - 1]
        stress = 2.0 if 300 <= i < 340 else 1.0
        mkt[i] = 0.0002 + np.sqrt(var[i]) * stress * shocks[i]
    columns, rets = [], []
    for sector, names in SECTORS.items():
        sector_factor = rng.normal(0, 0.006, t)
        for name in names:
            idio = rng.standard_t(4, t) * 0.008 / np.sqrt(2)
            rets.append(BETAS[sector] * mkt + sector_factor + idio)
            columns.append(name)
    prices = 100.0 * np.exp(np.cumsum(np.log1p(np.array(rets)), axis=1))
    return pd.DataFrame(prices.T.round(4), index=pd.Index(days, name="date"), columns=columns)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else PATH
    make_prices().to_csv(out)
    print(f"wrote {out}")
