"""The model's input frame, built the same way for training and for every scorer.

Only pandas and numpy: the batch scoring Glue job and other ONNX scorers import this without
scikit-learn (Glue 5.0 does not ship it, and its wheels would add ~45 MB to the job).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnops.contract import Contract


def model_frame(clean: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The model's input: feature columns in contract order, categories as str (missing -> ""),
    numerics as float64 values that are exactly representable in float32 (so scikit-learn and
    ONNX Runtime, which computes in float32, compare exactly the same numbers)."""
    out = {}
    for name in contract.categorical_features:
        series = clean[name]
        out[name] = series.astype(object).where(series.notna(), "").astype(str).to_numpy()
    for name in contract.numeric_features:
        values = pd.to_numeric(clean[name], errors="coerce").to_numpy(dtype=np.float64)
        out[name] = values.astype(np.float32).astype(np.float64)
    return pd.DataFrame(out, index=clean.index)[contract.feature_names]
