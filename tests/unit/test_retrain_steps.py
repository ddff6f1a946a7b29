"""Pieces of the retrain steps that need no AWS: the snapshot's canonical form and hash (whole,
and slice by slice), the stable holdout, the bounded selections and part-by-part drift, the
bootstrap in blocks, the state plumbing between steps and the settings read from the
environment."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from churnops.contract import INSURANCE, TELCO
from churnops.drift import DriftCounts, drift_report, reference_statistics
from churnops.errors import ChurnOpsError
from churnops.evaluation import bootstrap_blocks, bootstrap_counts
from churnops.model import FAMILIES
from churnops.retrain import snapshot
from churnops.retrain.evaluate import ModelScores, compare
from churnops.retrain.flow import RetrainEnv, json_safe, result_of
from churnops.retrain.sampling import SmallestByHash
from churnops.synthetic import generate
from churnops.wiring import GateSettings


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


def with_blanks(clean: pd.DataFrame) -> pd.DataFrame:
    """Missing values in a text, an integer and a float column (the table allows them in some
    contracts; the hash must treat them the same whichever way the rows arrive)."""
    frame = snapshot.typed(clean, TELCO)
    frame.loc[frame.index[::7], "PaymentMethod"] = None
    frame.loc[frame.index[::11], "tenure"] = pd.NA
    frame.loc[frame.index[::13], "TotalCharges"] = np.nan
    frame.loc[frame.index[::17], TELCO.target_column] = None
    return frame


def test_content_hash_of_slices_in_any_order_is_the_hash_of_the_whole(clean: pd.DataFrame) -> None:
    # GIVEN the canonical frame, and the same rows as Arrow slices (as the snapshot reads them)
    whole = with_blanks(clean)
    schema = snapshot.part_schema(TELCO)
    table = pa.Table.from_pandas(whole, schema=schema, preserve_index=False)
    slices = [table.slice(0, 700), table.slice(700, 900), table.slice(1600)]
    # WHEN the slices are hashed one by one, in another order
    total = snapshot.ContentHash(TELCO.column_names)
    for piece in reversed(slices):
        total.add(snapshot.row_hashes(snapshot._hashable(piece, TELCO)))
    # THEN the digest is the whole frame's
    assert total.rows == len(whole)
    assert total.hexdigest() == snapshot.content_hash(whole)
    # ... and a changed value, or a value moved to another row, changes it
    changed = whole.copy()
    changed.loc[3, "TotalCharges"] += 0.01
    assert snapshot.content_hash(changed) != snapshot.content_hash(whole)
    swapped = whole.copy()
    swapped.loc[[0, 1], "PaymentMethod"] = swapped.loc[[1, 0], "PaymentMethod"].to_numpy()
    assert swapped.loc[0, "PaymentMethod"] != whole.loc[0, "PaymentMethod"]
    assert snapshot.content_hash(swapped) != snapshot.content_hash(whole)


@pytest.mark.parametrize("contract", [TELCO, INSURANCE], ids=lambda c: c.name)
def test_parts_are_written_with_the_types_typed_produces(contract) -> None:  # type: ignore[no-untyped-def]
    schema = snapshot.part_schema(contract)
    assert schema.names == contract.column_names
    kinds = {"string": "string", "category": "string", "integer": "int64", "float": "double"}
    assert [str(t) for t in schema.types] == [kinds[c.kind.value] for c in contract.columns]
    # The pandas metadata brings typed()'s dtypes back on read (Int64, not float64 with NaN).
    empty = schema.empty_table().to_pandas()
    integer = next(c.name for c in contract.columns if c.kind.value == "integer")
    assert str(empty[integer].dtype) == "Int64"


def test_smallest_by_hash_keeps_the_k_smallest_in_bounded_memory_whatever_the_order(
    clean: pd.DataFrame,
) -> None:
    frame = snapshot.typed(clean, TELCO)
    hashes = snapshot.holdout_hash(frame[TELCO.id_column])
    expected = set(frame[TELCO.id_column].to_numpy()[np.argsort(hashes)[:150]])
    chosen = []
    for order in (np.arange(len(frame)), np.random.default_rng(4).permutation(len(frame))):
        keeper = SmallestByHash(150, TELCO.id_column)
        for start in range(0, len(frame), 250):  # parts of 250 rows, in this order
            rows = order[start : start + 250]
            keeper.offer(frame.iloc[rows], hashes[rows])
            # never more than the rows kept plus one part
            assert keeper.kept <= 150 + 250
        kept = keeper.frame()
        assert kept is not None and len(kept) == 150 and keeper.offered == len(frame)
        assert set(kept[TELCO.id_column]) == expected
        chosen.append(snapshot.typed(kept, TELCO))
    pd.testing.assert_frame_equal(chosen[0], chosen[1])
    assert SmallestByHash(0, TELCO.id_column).frame() is None


def test_drift_counted_part_by_part_is_the_report_of_the_whole_table(clean: pd.DataFrame) -> None:
    reference = reference_statistics(clean.iloc[:1000], TELCO)
    latest = clean.iloc[1000:].copy()
    latest.loc[latest.index[::5], "MonthlyCharges"] = np.nan
    latest.loc[latest.index[::9], "Contract"] = None
    counts = DriftCounts(reference, TELCO)
    for start in range(0, len(latest), 130):
        counts.add(latest.iloc[start : start + 130][counts.columns])
    assert counts.report() == drift_report(reference, latest, TELCO)
    assert counts.columns == TELCO.feature_names


def test_bootstrap_in_blocks_draws_the_same_resamples_and_decides_the_same() -> None:
    np.testing.assert_array_equal(
        np.concatenate(list(bootstrap_blocks(300, 50, seed=9, block_values=300 * 7))),
        bootstrap_counts(300, 50, seed=9),
    )
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            TELCO.target_column: rng.choice(["Yes", "No"], 2000),
            "Contract": rng.choice(TELCO.column("Contract").allowed, 2000),
            "tenure": rng.integers(0, 72, 2000),
        }
    )
    y = TELCO.target_vector(frame)
    challenger = ModelScores("c", 1 / (1 + np.exp(-(y * 2 - 1 + rng.normal(0, 1.4, 2000)))), 0.4)
    champion = ModelScores("p", 1 / (1 + np.exp(-(y * 2 - 1 + rng.normal(0, 1.6, 2000)))), 0.4)
    settings = GateSettings(n_bootstrap=200, seed=5)
    one_block = compare(frame, TELCO, challenger, champion, settings, block_values=10**9)
    small_blocks = compare(frame, TELCO, challenger, champion, settings, block_values=2000 * 9)
    assert json.dumps(one_block, sort_keys=True) == json.dumps(small_blocks, sort_keys=True)


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


def test_environment_sets_the_bounds_of_each_step() -> None:
    from churnops.training import TrainingOptions

    base = {"REGISTRY_URI": "r", "CURATED_BUCKET": "c"}
    default = RetrainEnv.from_env(base)
    assert default.training_options().fit_rows == TrainingOptions().fit_rows
    # No TRAIN_FAMILIES (cdk.json's `[]`): every family churnops.model defines, the MLP included.
    assert default.training_options().families == FAMILIES and "mlp" in FAMILIES
    assert default.snapshot_slice_rows == snapshot.DEFAULT_SLICE_ROWS
    env = RetrainEnv.from_env(
        {
            **base,
            "SNAPSHOT_SLICE_ROWS": "5000",
            "TRAIN_FIT_ROWS": "20000",
            "EVALUATE_HOLDOUT_ROWS": "3000",
        }
    )
    assert (env.snapshot_slice_rows, env.evaluation_holdout_rows) == (5000, 3000)
    assert env.training_options().fit_rows == 20000
    with pytest.raises(ChurnOpsError, match="EVALUATE_HOLDOUT_ROWS=0 must be at least 1"):
        RetrainEnv.from_env({**base, "EVALUATE_HOLDOUT_ROWS": "0"})
    with pytest.raises(ChurnOpsError, match="SNAPSHOT_SLICE_ROWS"):
        RetrainEnv.from_env({**base, "SNAPSHOT_SLICE_ROWS": "lots"})


def test_a_snapshot_is_read_only_under_the_contract_it_was_written_under() -> None:
    stored = snapshot.StoredSnapshot(
        "s3://curated/snapshots/run/customers/", 0.25, (), 10, TELCO.schema_hash
    )
    assert list(stored.frames(TELCO)) == []
    with pytest.raises(ChurnOpsError, match="another schema"):
        next(stored.frames(INSURANCE))
