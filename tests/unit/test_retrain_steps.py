"""Pieces of the retrain steps that need no AWS: the snapshot's canonical form and hash, the
stable holdout, the state plumbing between steps and the settings read from the environment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from churnops.contract import TELCO
from churnops.errors import ChurnOpsError
from churnops.retrain import snapshot
from churnops.retrain.flow import RetrainEnv, json_safe, result_of
from churnops.retrain.settings import GateSettings
from churnops.synthetic import generate


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    raw = generate(2000, seed=3)
    return TELCO.validate(raw.astype(object).where(raw.notna(), "").astype(str)).clean


def test_content_hash_depends_on_the_rows_not_their_order(clean: pd.DataFrame) -> None:
    shuffled = clean.sample(frac=1, random_state=1)
    assert snapshot.content_hash(snapshot.typed(clean, TELCO)) == snapshot.content_hash(
        snapshot.typed(shuffled, TELCO)
    )
    changed = clean.copy()
    changed.loc[0, "MonthlyCharges"] += 1
    assert snapshot.content_hash(snapshot.typed(changed, TELCO)) != snapshot.content_hash(
        snapshot.typed(clean, TELCO)
    )


def test_typed_refuses_a_table_without_a_contract_column(clean: pd.DataFrame) -> None:
    with pytest.raises(ChurnOpsError, match="lacks contract column"):
        snapshot.typed(clean.drop(columns=["tenure"]), TELCO)


def test_holdout_is_stable_per_customer_and_about_the_requested_share(clean: pd.DataFrame) -> None:
    ids = clean[TELCO.id_column]
    mask = snapshot.holdout_mask(ids, 0.25)
    assert 0.2 < mask.mean() < 0.3
    # The same customer is held out whatever else is in the table and in whatever order.
    subset = ids.iloc[::3].iloc[::-1]
    np.testing.assert_array_equal(snapshot.holdout_mask(subset, 0.25), mask[::3][::-1])


def test_split_keeps_only_labelled_rows_and_never_overlaps(clean: pd.DataFrame) -> None:
    frame = clean.copy()
    frame.loc[:9, TELCO.target_column] = None  # customers whose outcome is not known yet
    training, holdout = snapshot.split(frame, TELCO, 0.25)
    assert len(training) + len(holdout) == len(frame) - 10
    assert not set(training[TELCO.id_column]) & set(holdout[TELCO.id_column])


def test_result_of_reads_the_lambda_invoke_payload_and_names_a_missing_step() -> None:
    state = {"snapshot": {"Payload": {"uri": "s3://b/k"}, "StatusCode": 200}, "drift": {"a": 1}}
    assert result_of(state, "snapshot") == {"uri": "s3://b/k"}
    assert result_of(state, "drift") == {"a": 1}
    with pytest.raises(ChurnOpsError, match="no result of the train step"):
        result_of(state, "train")


def test_json_safe_output_is_strict_json() -> None:
    value = {"a": float("nan"), "b": np.float64(0.5), "c": (np.int64(3), float("inf")), "d": "x"}
    safe = json_safe(value)
    assert safe == {"a": None, "b": 0.5, "c": [3, None], "d": "x"}
    json.dumps(safe, allow_nan=False)


def test_environment_gives_settings_and_names_what_is_missing() -> None:
    env = RetrainEnv.from_env(
        {
            "REGISTRY_URI": "s3://registry/models",
            "CURATED_BUCKET": "curated",
            "CONTRACT_NAME": "insurance",
            "GATE_MARGIN": "0.02",
            "TRAIN_FAMILIES": "logistic, gradient_boosting",
            "TRAIN_FOLDS": "3",
        }
    )
    assert env.contract.name == "insurance"
    assert env.gate == GateSettings(margin=0.02)
    options = env.training_options()
    assert options.families == ("logistic", "gradient_boosting") and options.folds == 3
    assert options.quality_floor == env.gate.quality_floor
    with pytest.raises(ChurnOpsError, match="REGISTRY_URI"):
        RetrainEnv.from_env({"CURATED_BUCKET": "curated"})
    with pytest.raises(ChurnOpsError, match="TRAIN_FOLDS"):
        RetrainEnv.from_env({"REGISTRY_URI": "r", "CURATED_BUCKET": "c", "TRAIN_FOLDS": "many"})
    bad = RetrainEnv.from_env({"REGISTRY_URI": "r", "CURATED_BUCKET": "c", "TRAIN_FAMILIES": "svm"})
    with pytest.raises(ChurnOpsError, match="unknown model family svm"):
        bad.training_options()
