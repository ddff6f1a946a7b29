"""Model families: scikit-learn pipelines built from the data contract, all ONNX-convertible.

Families (each a whole pipeline, preprocessing included, so one artefact scores raw clean rows):
- ``logistic``: L2-regularised logistic regression on one-hot categories, standardised numerics
  and quantile bins of the numerics (the bins let a linear model bend: churn falls steeply over
  the first year of tenure and then flattens).
- ``gradient_boosting``: scikit-learn's GradientBoostingClassifier on one-hot categories and raw
  numerics. HistGradientBoosting is not used: skl2onnx 1.20 cannot convert it under
  scikit-learn 1.9 ("Expected an int, got a boolean"), and on 6,000 rows it is no better.
- ``ensemble``: soft vote of the two above (averaged probabilities).
- ``mlp``: scikit-learn's MLPClassifier (one or two hidden layers of ReLUs, Adam, early
  stopping, a fixed random_state) on one-hot categories and imputed, standardised numerics: the
  logistic family's inputs without the bins (a network bends by itself; it does need the
  scaling). The least simple family: it is kept only when it beats every other candidate by more
  than the comparison's tie margin (churnops.training).

Float32 parity with ONNX: ONNX Runtime computes in float32. `model_frame` (churnops.features)
rounds every numeric input to float32 before scikit-learn sees it (training and scoring alike),
and quantile bin edges are rounded to float32 after fitting, so both runtimes compare exactly the
same numbers and no customer can fall into a different bin or branch. The MLP has no branch to
fall into: its float32 arithmetic in ONNX Runtime differs from scikit-learn's float64 by about
1e-7 in probability (the logistic family's figure too), so its weights are left as fitted.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, VotingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder, StandardScaler

from churnops.contract import Contract

# Re-exported: the input framing lives apart so that ONNX scorers need no scikit-learn.
from churnops.features import model_frame as model_frame

# In order of simplicity: on a near-tie the comparison keeps the earliest (churnops.training).
FAMILIES = ("logistic", "gradient_boosting", "ensemble", "mlp")

# Modest grids on purpose: 6,000 rows do not support fine tuning, and the winner must hold up on
# customers outside this file. Values come from the lead's and our measurements on Telco.
LOGISTIC_GRID: tuple[dict[str, Any], ...] = ({"C": 0.1}, {"C": 1.0})
BOOSTING_GRID: tuple[dict[str, Any], ...] = (
    {"n_estimators": 200, "learning_rate": 0.05, "max_depth": 3},
    {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 2},
)
BOOSTING_FIXED = {"subsample": 0.8, "min_samples_leaf": 20}
QUANTILE_BINS = 8
MLP_GRID: tuple[dict[str, Any], ...] = (
    {"hidden_layer_sizes": (32,), "alpha": 0.3},
    {"hidden_layer_sizes": (32, 16), "alpha": 1.0},
)
# Adam with early stopping: 10% of the fit's rows (drawn with random_state, so refits repeat)
# are held back, and training stops once their accuracy has not improved for 50 epochs, keeping
# the best epoch's weights. Accuracy can sit at the majority share for the first epochs: with 20,
# one fold of tests/model/test_mlp_selection.py's customers stopped after 22 epochs at AUC 0.55.
# Sizing, measured on 2 cores fitting all 6,000 Telco rows: 0.8 s for 32 units (61 epochs), 2.4 s
# for 32 + 16 (153 epochs); a 200-tree boosting fit takes 2.0 s, logistic regression 0.1 s.
MLP_FIXED: dict[str, Any] = {"early_stopping": True, "n_iter_no_change": 50, "max_iter": 500}


def _one_hot(contract: Contract) -> OneHotEncoder:
    categories = [list(contract.column(n).allowed or ()) for n in contract.categorical_features]
    return OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False)


def _numeric_imputer() -> SimpleImputer:
    # Contracts may allow blank numerics; the median keeps such a customer ordinary.
    return SimpleImputer(strategy="median")


def _scaled_inputs(contract: Contract) -> list[tuple[str, Any, list[str]]]:
    """One-hot categories and imputed, standardised numerics (logistic and mlp)."""
    return [
        ("categories", _one_hot(contract), contract.categorical_features),
        (
            "scaled",
            Pipeline([("impute", _numeric_imputer()), ("scale", StandardScaler())]),
            contract.numeric_features,
        ),
    ]


def logistic_pipeline(contract: Contract, *, C: float = 1.0, seed: int = 42) -> Pipeline:
    numeric = contract.numeric_features
    # Binning a 0/1 integer (SeniorCitizen) adds nothing; bin the continuous-looking numerics.
    bins = [n for n in numeric if _binnable(contract, n)]
    transformers = _scaled_inputs(contract)
    if bins:
        transformers.append(
            (
                "bins",
                Pipeline(
                    [
                        ("impute", _numeric_imputer()),
                        (
                            "bin",
                            KBinsDiscretizer(
                                n_bins=QUANTILE_BINS,
                                encode="onehot-dense",
                                strategy="quantile",
                                quantile_method="averaged_inverted_cdf",
                            ),
                        ),
                    ]
                ),
                bins,
            )
        )
    return Pipeline(
        [
            ("features", ColumnTransformer(transformers, sparse_threshold=0)),
            ("classifier", LogisticRegression(C=C, max_iter=5000, random_state=seed)),
        ]
    )


def _binnable(contract: Contract, name: str) -> bool:
    col = contract.column(name)
    span = (col.maximum or 0) - (col.minimum or 0)
    return col.kind.value == "float" or span > QUANTILE_BINS


def boosting_pipeline(contract: Contract, *, seed: int = 42, **params: Any) -> Pipeline:
    settings = {**BOOSTING_GRID[0], **BOOSTING_FIXED, **params}
    return Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("categories", _one_hot(contract), contract.categorical_features),
                        # Raw numerics: trees need no scaling, and float32 parity stays exact.
                        ("numbers", _numeric_imputer(), contract.numeric_features),
                    ],
                    sparse_threshold=0,
                ),
            ),
            ("classifier", GradientBoostingClassifier(random_state=seed, **settings)),
        ]
    )


def mlp_pipeline(contract: Contract, *, seed: int = 42, **params: Any) -> Pipeline:
    settings = {**MLP_GRID[0], **MLP_FIXED, **params}
    return Pipeline(
        [
            ("features", ColumnTransformer(_scaled_inputs(contract), sparse_threshold=0)),
            ("classifier", MLPClassifier(random_state=seed, **settings)),
        ]
    )


def ensemble_pipeline(logistic: Pipeline, boosting: Pipeline) -> VotingClassifier:
    """Soft vote of two whole pipelines (each keeps its own preprocessing)."""
    return VotingClassifier(
        [("logistic", clone(logistic)), ("gradient_boosting", clone(boosting))],
        voting="soft",
        flatten_transform=False,  # skl2onnx converts only the unflattened form
    )


def build(family: str, contract: Contract, params: dict[str, Any], seed: int) -> BaseEstimator:
    if family == "logistic":
        return logistic_pipeline(contract, seed=seed, **params)
    if family == "gradient_boosting":
        return boosting_pipeline(contract, seed=seed, **params)
    if family == "mlp":
        return mlp_pipeline(contract, seed=seed, **params)
    if family == "ensemble":
        return ensemble_pipeline(
            logistic_pipeline(contract, seed=seed, **params["logistic"]),
            boosting_pipeline(contract, seed=seed, **params["gradient_boosting"]),
        )
    raise ValueError(f"unknown model family {family}")


def snap_to_float32(model: BaseEstimator) -> BaseEstimator:
    """Round fitted quantile-bin edges to float32 so ONNX Runtime bins exactly as scikit-learn.
    Call after every fit."""
    stack = [model]
    while stack:
        node = stack.pop()
        if isinstance(node, KBinsDiscretizer):
            node.bin_edges_ = np.array(
                [e.astype(np.float32).astype(np.float64) for e in node.bin_edges_], dtype=object
            )
        elif isinstance(node, Pipeline):
            stack.extend(step for _, step in node.steps)
        elif isinstance(node, ColumnTransformer):
            stack.extend(t for _, t, _ in getattr(node, "transformers_", []))
        elif isinstance(node, VotingClassifier):
            stack.extend(getattr(node, "estimators_", []))
    return model


def fit(model: BaseEstimator, X: pd.DataFrame, y: npt.NDArray[np.int_]) -> BaseEstimator:
    with warnings.catch_warnings():
        # A numeric with few distinct values (claims_count) gets fewer quantile bins than asked:
        # expected, and scikit-learn says so once per fit.
        warnings.filterwarnings("ignore", message="Bins whose width are too small")
        model.fit(X, y)
    return snap_to_float32(model)


def positive_probability(model: BaseEstimator, X: pd.DataFrame) -> npt.NDArray[np.float64]:
    classes = list(model.classes_)
    return np.asarray(model.predict_proba(X)[:, classes.index(1)], dtype=np.float64)
