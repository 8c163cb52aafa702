"""Monte Carlo VaR time against the number of portfolios (benches/gpu_first_run.sh's last step).

Run: ``python benches/mc_scaling.py --backend cuda --assets 1000 --scenarios 1000000
--portfolios 1 100 1000 --json OUT.json``. For each portfolio count P: one
``var_monte_carlo`` call of P random long-only portfolios over the same assets (normal
returns, a random covariance of rank ``min(assets, 50)`` plus a diagonal), VaR/CVaR only
(``contributions=False``, ``--contributions`` adds the Euler pass), timed after one warm-up
call as the median of ``--repeats`` calls, each ending with the backend's synchronize.
Prints one line per P and writes the records as JSON (``p50_s``, ``min_s``, ``per_portfolio_s``).
A call refused for its working memory (``ValueError``) is recorded with its message.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def _inputs(n_assets: int, n_portfolios: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rank = min(n_assets, 50)
    factors = rng.normal(0.0, 0.01, (n_assets, rank))
    cov = factors @ factors.T / rank + np.diag(rng.uniform(1e-5, 4e-4, n_assets))
    weights = rng.uniform(0.0, 1e4, (n_portfolios, n_assets))
    return weights, rng.normal(2e-4, 1e-4, n_assets), cov


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--assets", type=int, default=1000)
    parser.add_argument("--scenarios", type=int, default=1_000_000)
    parser.add_argument("--portfolios", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contributions", action="store_true")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)

    import gpu_trader as gt

    be = gt.get_backend(args.backend)
    records = []
    for p in args.portfolios:
        weights, mu, cov = _inputs(args.assets, p)
        w, m, c = (be.asarray(a) for a in (weights, mu, cov))
        record = {"backend": be.name, "device": be.device_name(), "assets": args.assets,
                  "scenarios": args.scenarios, "portfolios": p, "contributions": args.contributions}

        def call():
            out = gt.var_monte_carlo(w, m, c, n_scenarios=args.scenarios, seed=1,
                                     contributions=args.contributions, backend=be.name)
            be.synchronize()
            return out

        try:
            call()  # compile, allocate, warm caches
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
            record.update(p50_s=statistics.median(times), min_s=min(times),
                          per_portfolio_s=statistics.median(times) / p)
            print(f"{be.name} {args.assets} assets x {args.scenarios} scenarios, {p} portfolios: "
                  f"p50 {record['p50_s'] * 1e3:.2f} ms", flush=True)
        except ValueError as exc:
            record["refused"] = str(exc)
            print(f"{p} portfolios refused: {exc}", flush=True)
        records.append(record)
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(records, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
