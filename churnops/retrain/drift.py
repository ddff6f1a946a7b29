"""Step 2: drift of the latest data against the champion's reference statistics.

The latest data is the snapshot: the customer table as it stands now (ingestion upserts, so it is
the current customer base). The reference is what the champion was trained on, as recorded in its
model card (`reference_stats`). The report is stored next to the snapshot (and later added to the
challenger's registry version) and published as CloudWatch metrics: `SnapshotMaxFeaturePSI`
without dimensions, plus `FeaturePSI` and `FeatureMissingShare` per feature and the number of
drifted features.

None of them is the metric whose alarm starts this flow (`LiveMaxFeaturePSI`, from the serving
function's live traffic; see churnops/drift.py). This step runs inside a retrain: if its own
finding could start a retrain, every retrain that saw drift would start another, and the two
would race on the champion pointer. Its alarm only alerts.

Without a champion there is nothing to compare with: the report says so, no metric is sent (a
missing datapoint is not "no drift") and the snapshot is not read.

The snapshot is read part by part, only the features the reference has, and counted into the
reference's bins as it goes (churnops.drift.DriftCounts): memory is one part, whatever the size of
the table, and the report is the one the whole table at once would give.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd

from churnops import aws
from churnops.contract import Contract
from churnops.drift import DriftCounts
from churnops.registry import Registry
from churnops.retrain.snapshot import StoredSnapshot, put_bytes
from churnops.wiring import METRICS_NAMESPACE, SNAPSHOT_DRIFT_METRIC

log = logging.getLogger(__name__)


def feature_table(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Feature name -> {"psi", "missing_share", ...} from a churnops.drift report."""
    return dict(report.get("features", {}))


def _frames(
    customers: pd.DataFrame | StoredSnapshot, contract: Contract, columns: list[str]
) -> Iterator[pd.DataFrame]:
    if isinstance(customers, pd.DataFrame):
        yield customers
    else:
        yield from customers.frames(contract, columns=columns)


def build_report(
    registry: Registry, customers: pd.DataFrame | StoredSnapshot, contract: Contract
) -> dict[str, Any]:
    """The drift report of `customers` (a frame, or a stored snapshot read part by part) against
    the champion's reference statistics."""
    pointer = registry.champion()
    if pointer is None:
        return {"status": "no_champion", "champion_version": None, "drifted_features": []}
    card = registry.card(pointer["version"])
    reference = card.get("reference_stats")
    if not reference:
        return {
            "status": "no_reference",
            "champion_version": pointer["version"],
            "drifted_features": [],
        }
    counts = DriftCounts(reference, contract)
    for frame in _frames(customers, contract, counts.columns):
        counts.add(frame)
    report = counts.report()
    report.update(status="compared", champion_version=pointer["version"])
    return report


def publish_metrics(
    report: dict[str, Any], contract: Contract, namespace: str = METRICS_NAMESPACE
) -> int:
    """CloudWatch datapoints for a compared report; returns how many were sent."""
    if report.get("status") != "compared":
        return 0
    data: list[dict[str, Any]] = [
        {"MetricName": SNAPSHOT_DRIFT_METRIC, "Value": float(report["max_psi"]), "Unit": "None"},
        {
            "MetricName": "DriftedFeatures",
            "Value": float(len(report.get("drifted_features", []))),
            "Unit": "Count",
        },
    ]
    for name, stats in feature_table(report).items():
        dims = [{"Name": "Contract", "Value": contract.name}, {"Name": "Feature", "Value": name}]
        data.append({"MetricName": "FeaturePSI", "Dimensions": dims, "Value": float(stats["psi"])})
        data.append(
            {
                "MetricName": "FeatureMissingShare",
                "Dimensions": dims,
                "Value": float(stats.get("missing_share", 0.0)),
            }
        )
    cloudwatch = aws.client("cloudwatch")
    for start in range(0, len(data), 500):  # the API's per-call limit is 1000 datapoints
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 500])
    return len(data)


def run_drift(
    registry: Registry,
    customers: pd.DataFrame | StoredSnapshot,
    contract: Contract,
    *,
    report_uri: str,
    metrics_namespace: str = METRICS_NAMESPACE,
) -> dict[str, Any]:
    """Build, store and publish the report; returns a small summary for the next state."""
    report = build_report(registry, customers, contract)
    put_bytes(
        report_uri,
        json.dumps(report, indent=2, sort_keys=True, default=str).encode(),
        content_type="application/json",
    )
    sent = publish_metrics(report, contract, metrics_namespace)
    log.info(
        "drift %s: max PSI %s, drifted %s",
        report["status"],
        report.get("max_psi"),
        report.get("drifted_features"),
    )
    return {
        "report_uri": report_uri,
        "status": report["status"],
        "champion_version": report.get("champion_version"),
        "max_psi": report.get("max_psi"),
        "drifted_features": list(report.get("drifted_features", [])),
        "metrics_sent": sent,
    }
