"""How good a predictor is on data it was not fitted on: rank and error measures."""
from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau


def regression_quality(y_true, y_pred) -> dict[str, float]:
    """Kendall tau (ranking, what a search needs), RMSE, MAPE and the share within +-10 %."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    tau = kendalltau(y_true, y_pred).statistic if len(y_true) > 1 else float("nan")
    rel = np.abs(y_pred - y_true) / np.maximum(np.abs(y_true), 1e-12)
    return {
        "kendall_tau": float(tau) if np.isfinite(tau) else float("nan"),
        "rmse": float(np.sqrt(np.mean((y_pred - y_true) ** 2))),
        "mape": float(np.mean(rel)),
        "within_10pct": float(np.mean(rel <= 0.10)),
        "n": int(len(y_true)),
    }
