"""CloudWatch: metrics from the embedded metric format, alarms that start and stay as AWS's do,
and alarm evaluation with its actions and EventBridge events.

moto 5.2.5 stores metric data and alarms but does nothing with them, and the rollout's rollback
(issue 14) and the drift alarm's retrain start both hinge on alarms changing state:
- **EMF.** CloudWatch Logs turns a log event in the embedded metric format into metric data
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html);
  moto has no such extraction. `metric_data_from_emf` does it to the specification (an invalid
  document is ignored, as CloudWatch ignores it, with a log line), and `put_embedded_metrics`
  stores the result in moto's CloudWatch backend directly: it is CloudWatch Logs' doing, on its
  own account, so the function's role (and the twin's IAM checks on requests) plays no part.
  `emf_sink` is the Lambda sandboxes' sink (`churnops.local.lambda_sandbox.set_emf_sink`).
- **PutMetricAlarm.** "When this operation creates an alarm, the alarm state is immediately set to
  INSUFFICIENT_DATA ... When you update an existing alarm, its state is left unchanged"
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricAlarm.html).
  moto sets a new alarm OK and resets an updated one to OK: an alarm nobody has evaluated would
  read as healthy. Patched.
- **GetMetricStatistics.** "CloudWatch treats each unique combination of dimensions as a separate
  metric ... You must specify the same dimensions that were used when the metrics were created"
  (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html);
  moto answers with every metric whose dimensions include the requested ones, so Powertools'
  two dimension sets per record would count twice. Patched to the exact combination.
- **Evaluation.** moto never evaluates an alarm. `evaluate_alarms` does, as
  https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html
  describes it (the numbered rules are in `_decide`), sets the state with a reason, publishes to
  the SNS topics among the new state's actions, and puts the "CloudWatch Alarm State Change"
  event on the default event bus through moto's PutEvents, so rules on it reach their targets
  through `churnops.local.moto_ext.events` like any other event. `AlarmEvaluator` runs it on a
  timer (the twin daemon does, every `CHURNOPS_TWIN_ALARM_SECONDS`).

The twin's deviation, on purpose: an alarm's periods are windows that end at the evaluation
instant (the newest is `(now - Period, now]`), not windows aligned to the clock, and a datapoint
counts as soon as it is stored. CloudWatch aligns periods to the minute and evaluates a finished
period; the twin slides, so a rollout baking for seconds sees its metrics at once.

Not evaluated (their state stays as it is, INSUFFICIENT_DATA from creation): metric math alarms
(`Metrics`), anomaly detection bands (`ThresholdMetricId`), composite alarms, and statistics other
than SampleCount, Average, Sum, Minimum, Maximum and percentiles `pNN` (trimmed means and the
like). Only SNS topics among an alarm's actions are acted on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from churnops.local.lambda_sandbox import FunctionSpec

LOG = logging.getLogger("churnops.twin.moto_ext")

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
EVENT_SOURCE = "aws.cloudwatch"
EVENT_DETAIL_TYPE = "CloudWatch Alarm State Change"


# ---- EMF -> metric data --------------------------------------------------------------------------
# The specification's limits (its "Embedded metric format document structure" and JSON schema).
_MAX_METRICS_PER_DIRECTIVE = 100
_MAX_DIMENSION_KEYS = 30
_MAX_DIMENSION_VALUE = 1024
_MAX_VALUES_PER_METRIC = 100
_MAX_NAME = 1024  # Namespace and metric Name: the schema's maxLength
_MAX_DIMENSION_REFERENCE = 250  # a DimensionReference: the schema's maxLength
# The units the schema's MetricUnit pattern allows ("Values SHOULD be valid CloudWatch metric
# units"; the schema makes it a MUST, and so does the twin).
_UNITS = frozenset(
    {
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    }
)
# "Setting this to 1 specifies this metric as a high-resolution metric ... Setting this to 60
# specifies this metric as standard-resolution"; 60 when absent.
_STORAGE_RESOLUTIONS = (1, 60)
# CloudWatch Logs refuses log events more than 2 hours in the future or older than 14 days
# (https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_PutLogEvents.html),
# so their metrics never exist either.
_FUTURE_LIMIT = dt.timedelta(hours=2)
_PAST_LIMIT = dt.timedelta(days=14)


class InvalidEmfError(ValueError):
    """The document breaks the embedded metric format specification: CloudWatch ignores it."""


def _string(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidEmfError(f"{what} must be a string of 1 to {limit} characters: {value!r}")
    return value


def _number(value: Any) -> TypeGuard[int | float]:
    # JSON numbers only: a boolean is not one, and NaN/Infinity are no JSON numbers at all
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_data_from_emf(
    document: Mapping[str, Any], *, now: dt.datetime | None = None
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The metric data CloudWatch extracts from one EMF document: (namespace, MetricData in
    PutMetricData's shape) per MetricDirective, one datum per DimensionSet and metric, with every
    value of the metric's target member, its Unit (default "None") and StorageResolution (default
    60), at `_aws.Timestamp`. Raises InvalidEmfError when the document breaks the specification."""
    metadata = document.get("_aws")
    if not isinstance(metadata, dict):
        raise InvalidEmfError("_aws must be an object")
    directives = metadata.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        raise InvalidEmfError("_aws.CloudWatchMetrics must be an array of MetricDirectives")
    stamp = metadata.get("Timestamp")
    # "Values MUST be expressed as the number of milliseconds after Jan 1, 1970 00:00:00 UTC"
    if not _number(stamp):
        raise InvalidEmfError(f"_aws.Timestamp must be milliseconds since the epoch: {stamp!r}")
    timestamp = dt.datetime.fromtimestamp(float(stamp) / 1000, dt.UTC).replace(tzinfo=None)
    reference = _naive_utc(now)
    if timestamp > reference + _FUTURE_LIMIT or timestamp < reference - _PAST_LIMIT:
        raise InvalidEmfError(f"_aws.Timestamp {timestamp:%Y-%m-%dT%H:%M:%SZ} is out of range")
    extracted: list[tuple[str, list[dict[str, Any]]]] = []
    for directive in directives:
        if not isinstance(directive, dict):
            raise InvalidEmfError("a MetricDirective must be an object")
        namespace = _string(directive.get("Namespace"), "Namespace", _MAX_NAME)
        dimension_sets = directive.get("Dimensions")
        # the schema: Dimensions is an array of at least one DimensionSet
        if not isinstance(dimension_sets, list) or not dimension_sets:
            raise InvalidEmfError("Dimensions must be an array of DimensionSets")
        resolved_sets = [_dimension_set(document, keys) for keys in dimension_sets]
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or len(metrics) > _MAX_METRICS_PER_DIRECTIVE:
            raise InvalidEmfError(
                f"Metrics must be an array of at most {_MAX_METRICS_PER_DIRECTIVE} definitions"
            )
        data: list[dict[str, Any]] = []
        for definition in metrics:
            if not isinstance(definition, dict):
                raise InvalidEmfError("a MetricDefinition must be an object")
            name = _string(definition.get("Name"), "a metric Name", _MAX_NAME)
            unit = definition.get("Unit", "None")
            if unit not in _UNITS:
                raise InvalidEmfError(f"metric {name}: {unit!r} is not a CloudWatch unit")
            resolution = definition.get("StorageResolution", 60)
            if resolution not in _STORAGE_RESOLUTIONS or isinstance(resolution, bool):
                raise InvalidEmfError(f"metric {name}: StorageResolution must be 1 or 60")
            values = _metric_values(document, name)
            if not values:
                continue  # an empty array is a metric with nothing to record
            for dimensions in resolved_sets:
                data.append(
                    {
                        "MetricName": name,
                        "Dimensions": dimensions,
                        "Values": values,
                        "Unit": unit,
                        "StorageResolution": resolution,
                        "Timestamp": timestamp,
                    }
                )
        extracted.append((namespace, data))
    return extracted


def _dimension_set(document: Mapping[str, Any], keys: Any) -> list[dict[str, str]]:
    """A DimensionSet's dimensions: "an array of strings containing the dimension keys"; "The
    values within this array MUST also be members on the root-node"; "MUST NOT contain more than
    30 dimension keys. A DimensionSet MAY be empty"; "The target member MUST have a string value.
    This value MUST NOT contain more than 1024 characters"."""
    if not isinstance(keys, list) or len(keys) > _MAX_DIMENSION_KEYS:
        raise InvalidEmfError(
            f"a DimensionSet must be an array of at most {_MAX_DIMENSION_KEYS} keys: {keys!r}"
        )
    dimensions = []
    for key in keys:
        _string(key, "a dimension key", _MAX_DIMENSION_REFERENCE)
        if key not in document:
            raise InvalidEmfError(f"dimension {key!r} has no target member on the root node")
        value = _string(document[key], f"dimension {key!r}", _MAX_DIMENSION_VALUE)
        dimensions.append({"Name": key, "Value": value})
    return dimensions


def _metric_values(document: Mapping[str, Any], name: str) -> list[float]:
    """A metric target "MUST be a numeric value or an array of numeric values. Numeric array
    metric targets MUST NOT have more than 100 members"; targets are members of the root node
    (never nested)."""
    if name not in document:
        raise InvalidEmfError(f"metric {name!r} has no target member on the root node")
    target = document[name]
    values = target if isinstance(target, list) else [target]
    if len(values) > _MAX_VALUES_PER_METRIC or not all(_number(value) for value in values):
        raise InvalidEmfError(
            f"metric {name!r} must be a number or an array of at most "
            f"{_MAX_VALUES_PER_METRIC} numbers: {target!r}"
        )
    return [float(value) for value in values]


def put_embedded_metrics(document: Mapping[str, Any], *, account: str, region: str) -> int:
    """Store the metric data of one EMF document in moto's CloudWatch for `account` and `region`,
    as CloudWatch Logs does for the log group's account: straight into the backend, no request and
    so no caller's IAM. Returns how many values were stored; 0 for an invalid document, which is
    logged and otherwise ignored, as CloudWatch ignores it."""
    from moto.cloudwatch.models import cloudwatch_backends

    try:
        extracted = metric_data_from_emf(document)
    except InvalidEmfError as err:
        LOG.warning("embedded metric format document ignored (invalid: %s)", err)
        return 0
    backend = cloudwatch_backends[account][region]
    stored = 0
    for namespace, data in extracted:
        if data:
            backend.put_metric_data(namespace, data)
            stored += sum(len(datum["Values"]) for datum in data)
    return stored


def emf_sink(spec: FunctionSpec, document: dict[str, Any]) -> None:
    """The Lambda sandboxes' EMF sink: a function's metrics go to its own account and region."""
    put_embedded_metrics(document, account=spec.arn.split(":")[4], region=spec.region)


# ---- alarm evaluation ------------------------------------------------------------------------------
_COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanOrEqualToThreshold": (lambda v, t: v >= t, "greater than or equal to"),
    "GreaterThanThreshold": (lambda v, t: v > t, "greater than"),
    "LessThanThreshold": (lambda v, t: v < t, "less than"),
    "LessThanOrEqualToThreshold": (lambda v, t: v <= t, "less than or equal to"),
}
_PERCENTILE = re.compile(r"^p(\d{1,3}(?:\.\d+)?)$")
# The treat-missing-data settings; "missing" is the default (AlarmThatSendsEmail.html, "Configuring
# how CloudWatch alarms treat missing data").
_MISSING, _IGNORE, _BREACHING, _NOT_BREACHING = "missing", "ignore", "breaching", "notBreaching"
# "CloudWatch retrieves the 5 most recent data points when evaluating the alarm" of 3 evaluation
# periods; AWS says the range "depends on the length of the alarm period". The twin takes N + 2.
_EXTRA_PERIODS = 2

_evaluation_lock = threading.Lock()


@dataclass(frozen=True)
class AlarmChange:
    """One alarm's state change made by `evaluate_alarms`."""

    alarm_name: str
    alarm_arn: str
    account: str
    region: str
    previous_state: str
    state: str
    reason: str
    timestamp: dt.datetime  # UTC, naive as moto keeps it


@dataclass(frozen=True)
class _Datapoint:
    start: dt.datetime  # the period's start (CloudWatch labels a datapoint with it)
    value: float
    samples: float


def _naive_utc(moment: dt.datetime | None) -> dt.datetime:
    """moto keeps metric timestamps as naive UTC datetimes."""
    if moment is None:
        return dt.datetime.now(dt.UTC).replace(tzinfo=None)
    if moment.tzinfo is not None:
        return moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _percentile_of(statistic: str) -> float | None:
    match = _PERCENTILE.match(statistic)
    if match is None:
        return None
    percentile = float(match.group(1))
    return percentile if 0 <= percentile <= 100 else None


def _statistic(alarm: Any, data: Sequence[Any]) -> tuple[float, float] | None:
    """(value, sample count) of the alarm's statistic over one period's data, None if it has none.
    Percentiles are over the raw values (a StatisticSet has none to rank; nearest-rank method);
    the others also take StatisticSets (moto's MetricAggregatedDatum)."""
    from moto.cloudwatch.models import MetricAggregatedDatum, MetricDatum

    raw = [float(d.value) for d in data if isinstance(d, MetricDatum)]
    sets = [d for d in data if isinstance(d, MetricAggregatedDatum)]
    statistic = alarm.extended_statistic or alarm.statistic
    percentile = _percentile_of(statistic) if alarm.extended_statistic else None
    if percentile is not None:
        if not raw:
            return None
        ranked = sorted(raw)
        rank = max(1, math.ceil(percentile / 100 * len(ranked)))
        return ranked[rank - 1], float(len(ranked))
    count = len(raw) + sum(float(s.sample_count) for s in sets)
    if not count:
        return None
    total = sum(raw) + sum(float(s.sum) for s in sets)
    if statistic == "SampleCount":
        return count, count
    if statistic == "Sum":
        return total, count
    if statistic == "Average":
        return total / count, count
    if statistic == "Minimum":
        return min([*raw, *(float(s.min) for s in sets)]), count
    if statistic == "Maximum":
        return max([*raw, *(float(s.max) for s in sets)]), count
    return None


def _unsupported(alarm: Any) -> str | None:
    """Why the twin does not evaluate this alarm, or None when it does."""
    if alarm.rule is not None:
        return "a composite alarm"
    if alarm.metric_data_queries:
        return "a metric math alarm (Metrics)"
    if not alarm.period or not alarm.evaluation_periods:
        return "no period or evaluation periods"
    if alarm.threshold_metric_id or alarm.comparison_operator not in _COMPARISONS:
        return f"comparison {alarm.comparison_operator} (anomaly detection)"
    statistic = alarm.extended_statistic or alarm.statistic
    if not statistic:
        return "no statistic"
    if alarm.extended_statistic and _percentile_of(alarm.extended_statistic) is None:
        return f"extended statistic {alarm.extended_statistic}"
    if not alarm.extended_statistic and statistic not in (
        "SampleCount",
        "Average",
        "Sum",
        "Minimum",
        "Maximum",
    ):
        return f"statistic {statistic}"
    return None


def _same_metric(alarm: Any, datum: Any) -> bool:
    """A metric is its namespace, name and exact set of dimensions: data published under more
    dimensions is another metric (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension)."""
    if datum.namespace != alarm.namespace or datum.name != alarm.metric_name:
        return False
    if alarm.unit and datum.unit != alarm.unit:
        return False
    wanted = {(d.name, d.value) for d in alarm.dimensions}
    have = {(d.name, d.value) for d in datum.dimensions}
    return wanted == have and len(datum.dimensions) == len(alarm.dimensions)


def _datapoints(alarm: Any, data: Sequence[Any], now: dt.datetime) -> list[_Datapoint | None]:
    """The evaluation range, newest first: one datapoint (or None, missing) per period, the
    periods sliding back from `now` (the twin's deviation: see the module docstring)."""
    period = dt.timedelta(seconds=int(alarm.period))
    periods = int(alarm.evaluation_periods) + _EXTRA_PERIODS
    oldest = now - periods * period
    mine = [d for d in data if oldest < d.timestamp <= now and _same_metric(alarm, d)]
    points: list[_Datapoint | None] = []
    for age in range(periods):
        end = now - age * period
        start = end - period
        window = [d for d in mine if start < d.timestamp <= end]
        figures = _statistic(alarm, window) if window else None
        points.append(None if figures is None else _Datapoint(start, *figures))
    return points


def _low_sample_count(alarm: Any, points: Iterable[_Datapoint | None]) -> bool:
    """EvaluateLowSampleCountPercentile=ignore: "the alarm state does not change during periods
    with too few data points to be statistically significant": fewer than 10/(1-p) samples for a
    percentile p in [0.5, 1), 10/p below 0.5 (AlarmThatSendsEmail.html, "Percentile-based alarms
    and low data samples")."""
    if alarm.evaluate_low_sample_count_percentile != "ignore" or not alarm.extended_statistic:
        return False
    percentile = (_percentile_of(alarm.extended_statistic) or 0) / 100
    if percentile >= 1 or percentile <= 0:
        return False
    needed = 10 / (1 - percentile) if percentile >= 0.5 else 10 / percentile
    return any(point is not None and point.samples < needed for point in points)


@dataclass(frozen=True)
class _Decision:
    state: str | None  # None: keep the current state
    reason: str
    evaluated: list[_Datapoint]


def _decide(alarm: Any, points: list[_Datapoint | None], current: str) -> _Decision:
    """The alarm's new state from its evaluation range (newest first), per "How alarm state is
    evaluated when data is missing" (AlarmThatSendsEmail.html), N evaluation periods, M datapoints
    to alarm:
    1. N or more real datapoints in the range: the most recent N real ones decide, and how missing
       data is treated "is not needed and is ignored": ALARM when M or more breach, else OK.
    2. None at all: `missing` INSUFFICIENT_DATA, `ignore` keeps the state, `breaching` ALARM,
       `notBreaching` OK.
    3. Fewer than N: the missing ones are filled "only as few times as possible" (N minus the
       real ones) with the treatment, and "all real data points in the evaluation range are
       included": ALARM when M or more breach. For `missing` and `ignore` no fill breaches, but
       "alarms are designed to always go into ALARM state when the oldest available breaching
       datapoint during the Evaluation Periods number of data points is at least as old as the
       value of Datapoints to Alarm, and all other more recent data points are breaching or
       missing" (the premature-transition rule): `missing` goes to ALARM then, `ignore` keeps the
       state (the documented tables' "Retain current state")."""
    compare, phrase = _COMPARISONS[alarm.comparison_operator]
    threshold = float(alarm.threshold)
    needed = int(alarm.evaluation_periods)
    to_alarm = int(alarm.datapoints_to_alarm or needed)
    treatment = alarm.treat_missing_data or _MISSING
    real = [(age, point) for age, point in enumerate(points, start=1) if point is not None]

    def breaches(point: _Datapoint) -> bool:
        return compare(point.value, threshold)

    def listed(chosen: list[_Datapoint]) -> str:
        return ", ".join(f"{p.value!r} ({p.start:%d/%m/%y %H:%M:%S})" for p in chosen)

    def minimum(state: str) -> str:
        plural = "s" if to_alarm != 1 else ""
        return f"(minimum {to_alarm} datapoint{plural} for {current} -> {state} transition)"

    def crossed(chosen: list[_Datapoint], breaching: int, state: str, extra: str = "") -> str:
        # out of N: the real datapoints listed, and any filled ones named in `extra`
        count = breaching if state == ALARM else needed - breaching
        negation = "" if state == ALARM else "not "
        verb = "was" if count == 1 else "were"
        return (
            f"Threshold Crossed: {count} out of the last {needed} datapoints "
            f"[{listed(chosen)}] {verb} {negation}{phrase} the threshold ({threshold!r}){extra} "
            f"{minimum(state)}."
        )

    if len(real) >= needed:
        chosen = [point for _, point in real[:needed]]
        breaching = sum(breaches(point) for point in chosen)
        state = ALARM if breaching >= to_alarm else OK
        return _Decision(state, crossed(chosen, breaching, state), chosen)

    span = f"{len(points)} periods of {int(alarm.period)} s"
    if not real:
        if treatment == _MISSING:
            return _Decision(
                INSUFFICIENT_DATA, f"Insufficient Data: no datapoints were received for {span}.", []
            )
        if treatment == _IGNORE:
            return _Decision(None, f"no datapoints for {span}; missing data is ignored", [])
        state = ALARM if treatment == _BREACHING else OK
        label = "Breaching" if treatment == _BREACHING else "NonBreaching"
        return _Decision(
            state,
            f"Threshold Crossed: no datapoints were received for {span} and {needed} missing "
            f"datapoint{'s were' if needed != 1 else ' was'} treated as [{label}].",
            [],
        )

    chosen = [point for _, point in real]
    filled = needed - len(real)
    breaching = sum(breaches(point) for point in chosen)
    if treatment == _BREACHING:
        breaching += filled
    label = {_BREACHING: "Breaching", _NOT_BREACHING: "NonBreaching"}.get(treatment, "Missing")
    extra = f" and {filled} missing datapoint{'s' if filled != 1 else ''} treated as [{label}]"
    state = ALARM if breaching >= to_alarm else OK
    if state == OK and treatment in (_MISSING, _IGNORE):
        recent = [age for age, point in real if age <= needed]
        premature = (
            all(breaches(point) for point in chosen) and bool(recent) and max(recent) >= to_alarm
        )
        if premature:
            if treatment == _IGNORE:
                return _Decision(None, "a breaching datapoint followed by missing data", chosen)
            oldest = max(recent)
            return _Decision(
                ALARM,
                f"Threshold Crossed: {len(chosen)} out of the last {needed} datapoints "
                f"[{listed(chosen)}] {'was' if len(chosen) == 1 else 'were'} {phrase} the "
                f"threshold ({threshold!r}) and every datapoint after the breaching one "
                f"{oldest} periods ago is missing {minimum(ALARM)}.",
                chosen,
            )
    return _Decision(state, crossed(chosen, breaching, state, extra), chosen)


def _iso(moment: dt.datetime) -> str:
    """CloudWatch's timestamps in events and reason data: 2019-10-02T17:04:40.989+0000."""
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}+0000"


def _reason_data(alarm: Any, decision: _Decision, now: dt.datetime) -> str:
    """StateReasonData as CloudWatch writes it for a metric alarm."""
    period = int(alarm.period)
    data: dict[str, Any] = {
        "version": "1.0",
        "queryDate": _iso(now),
        "startDate": _iso(
            now - dt.timedelta(seconds=period * (int(alarm.evaluation_periods) + _EXTRA_PERIODS))
        ),
        "period": period,
        "recentDatapoints": [point.value for point in decision.evaluated],
        "threshold": float(alarm.threshold),
        "evaluatedDatapoints": [
            {"timestamp": _iso(p.start), "sampleCount": p.samples, "value": p.value}
            for p in decision.evaluated
        ],
    }
    if alarm.extended_statistic:
        data["extendedStatistic"] = alarm.extended_statistic
    else:
        data["statistic"] = alarm.statistic
    if alarm.unit:
        data["unit"] = alarm.unit
    return json.dumps(data)


def evaluate_alarms(now: dt.datetime | None = None) -> list[AlarmChange]:
    """Evaluate every metric alarm of every account and region in moto's CloudWatch as of `now`
    (default: the current time) and return the state changes made. Each change is recorded with
    its reason (DescribeAlarms: StateValue, StateReason, StateReasonData, StateUpdatedTimestamp),
    published to the SNS topics among the new state's actions when actions are enabled, and put on
    the default event bus as a "CloudWatch Alarm State Change" event. Periods slide back from
    `now` (see the module docstring). Thread-safe: evaluations run one at a time."""
    from moto.cloudwatch.models import cloudwatch_backends

    instant = _naive_utc(now)
    changes: list[AlarmChange] = []
    with _evaluation_lock:
        for account, regions in list(cloudwatch_backends.items()):
            for region, backend in list(regions.items()):
                changes.extend(_evaluate_backend(backend, account, region, instant))
    return changes


def _evaluate_backend(
    backend: Any, account: str, region: str, now: dt.datetime
) -> list[AlarmChange]:
    alarms = [alarm for alarm in list(backend.alarms.values()) if _unsupported(alarm) is None]
    if not alarms:
        return []
    data = list(backend.metric_data)
    if any(str(alarm.namespace or "").startswith("AWS/") for alarm in alarms):
        data += list(backend.aws_metric_data)  # moto's own service metrics (S3's)
    # Only what some alarm's evaluation range reaches, by metric: moto keeps every datum forever.
    horizon = now - max(
        dt.timedelta(seconds=int(a.period) * (int(a.evaluation_periods) + _EXTRA_PERIODS))
        for a in alarms
    )
    by_metric: dict[tuple[str, str], list[Any]] = {}
    for datum in data:
        if horizon < datum.timestamp <= now:
            by_metric.setdefault((datum.namespace, datum.name), []).append(datum)
    changes = []
    for alarm in alarms:
        mine = by_metric.get((alarm.namespace, alarm.metric_name), [])
        try:
            change = _evaluate_alarm(backend, alarm, mine, account, region, now)
        except Exception:
            LOG.exception("alarm %s: evaluation failed", alarm.name)
            continue
        if change is not None:
            changes.append(change)
    return changes


def _evaluate_alarm(
    backend: Any, alarm: Any, data: Sequence[Any], account: str, region: str, now: dt.datetime
) -> AlarmChange | None:
    points = _datapoints(alarm, data, now)
    if _low_sample_count(alarm, points):
        return None
    decision = _decide(alarm, points, alarm.state_value)
    previous = {
        "value": alarm.state_value,
        "reason": alarm.state_reason,
        "reasonData": alarm.state_reason_data,
        "timestamp": _iso(alarm.state_updated_timestamp),
    }
    if decision.state is None or decision.state == alarm.state_value:
        return None
    backend.set_alarm_state(
        alarm.name, decision.reason, _reason_data(alarm, decision, now), decision.state
    )
    change = AlarmChange(
        alarm_name=alarm.name,
        alarm_arn=alarm.alarm_arn,
        account=account,
        region=region,
        previous_state=previous["value"],
        state=alarm.state_value,
        reason=alarm.state_reason,
        timestamp=alarm.state_updated_timestamp,
    )
    LOG.info(
        "alarm %s: %s -> %s: %s", alarm.name, change.previous_state, change.state, change.reason
    )
    if alarm.actions_enabled:
        _notify(alarm, previous["value"], account, region)
    _put_state_change_event(alarm, previous, account, region)
    return change


def _actions_for(alarm: Any) -> list[str]:
    return list(
        {
            ALARM: alarm.alarm_actions,
            OK: alarm.ok_actions,
            INSUFFICIENT_DATA: alarm.insufficient_data_actions,
        }[alarm.state_value]
        or []
    )


def _notify(alarm: Any, previous: str, account: str, region: str) -> None:
    """Publish the alarm notification to each SNS topic among the new state's actions, shaped as
    CloudWatch's (AlarmName, NewStateValue, NewStateReason, Trigger, ...). Other actions (Auto
    Scaling, EC2, Systems Manager, Lambda) are not the twin's."""
    from moto.sns.models import sns_backends

    for action in _actions_for(alarm):
        parts = action.split(":")
        if len(parts) < 6 or parts[2] != "sns":
            LOG.warning("alarm %s: action %s is not an SNS topic; skipped", alarm.name, action)
            continue
        try:
            topic = sns_backends[parts[4] or account][parts[3] or region].get_topic(action)
        except Exception:
            LOG.warning("alarm %s: action topic %s does not exist", alarm.name, action)
            continue
        topic.publish(
            json.dumps(_notification(alarm, previous, account, region)),
            subject=f'{alarm.state_value}: "{alarm.name}" in {region}'[:100],
        )


def _notification(alarm: Any, previous: str, account: str, region: str) -> dict[str, Any]:
    trigger: dict[str, Any] = {
        "MetricName": alarm.metric_name,
        "Namespace": alarm.namespace,
        "StatisticType": "ExtendedStatistic" if alarm.extended_statistic else "Statistic",
        "Statistic": (alarm.extended_statistic or str(alarm.statistic).upper()),
        "Unit": alarm.unit,
        "Dimensions": [{"value": d.value, "name": d.name} for d in alarm.dimensions],
        "Period": int(alarm.period),
        "EvaluationPeriods": int(alarm.evaluation_periods),
        "DatapointsToAlarm": int(alarm.datapoints_to_alarm or alarm.evaluation_periods),
        "ComparisonOperator": alarm.comparison_operator,
        "Threshold": float(alarm.threshold),
        "TreatMissingData": alarm.treat_missing_data or _MISSING,
        "EvaluateLowSampleCountPercentile": alarm.evaluate_low_sample_count_percentile or "",
    }
    return {
        "AlarmName": alarm.name,
        "AlarmDescription": alarm.description,
        "AWSAccountId": account,
        "AlarmConfigurationUpdatedTimestamp": _iso(alarm.configuration_updated_timestamp),
        "NewStateValue": alarm.state_value,
        "NewStateReason": alarm.state_reason,
        "StateChangeTime": _iso(alarm.state_updated_timestamp),
        "Region": region,
        "AlarmArn": alarm.alarm_arn,
        "OldStateValue": previous,
        "OKActions": list(alarm.ok_actions or []),
        "AlarmActions": list(alarm.alarm_actions or []),
        "InsufficientDataActions": list(alarm.insufficient_data_actions or []),
        "Trigger": trigger,
    }


def _put_state_change_event(
    alarm: Any, previous: dict[str, Any], account: str, region: str
) -> None:
    """CloudWatch "sends events to Amazon EventBridge whenever a CloudWatch alarm ... changes
    alarm state", a single metric alarm's with `alarmName`, `state`, `previousState` and
    `configuration` in the detail and the alarm's ARN in `resources`
    (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch-and-eventbridge.html).
    It goes through moto's PutEvents on the default bus, so every matching rule's targets are
    delivered by the events extension, whatever the alarm's actions."""
    from moto.events.models import events_backends

    metric: dict[str, Any] = {"name": alarm.metric_name, "namespace": alarm.namespace}
    if alarm.dimensions:
        metric["dimensions"] = {d.name: d.value for d in alarm.dimensions}
    metric_stat: dict[str, Any] = {
        "metric": metric,
        "period": int(alarm.period),
        "stat": alarm.extended_statistic or alarm.statistic,
    }
    if alarm.unit:
        metric_stat["unit"] = alarm.unit
    configuration: dict[str, Any] = {
        "metrics": [{"id": "m1", "metricStat": metric_stat, "returnData": True}]
    }
    if alarm.description:
        configuration["description"] = alarm.description
    detail = {
        "alarmName": alarm.name,
        "state": {
            "value": alarm.state_value,
            "reason": alarm.state_reason,
            "reasonData": alarm.state_reason_data,
            "timestamp": _iso(alarm.state_updated_timestamp),
        },
        "previousState": previous,
        "configuration": configuration,
    }
    try:
        entries = events_backends[account][region].put_events(
            [
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": EVENT_DETAIL_TYPE,
                    "Detail": json.dumps(detail),
                    "Resources": [alarm.alarm_arn],
                }
            ]
        )
    except Exception:
        LOG.exception("alarm %s: state change event not delivered", alarm.name)
        return
    for entry in entries:
        if entry.get("ErrorCode"):
            LOG.warning("alarm %s: state change event refused: %s", alarm.name, entry)


class AlarmEvaluator:
    """Evaluates every alarm each `interval` seconds on a thread of its own, until `stop`."""

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"alarm evaluation interval must be positive, not {interval}")
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twin-alarms", daemon=True)

    def start(self) -> AlarmEvaluator:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                evaluate_alarms()
            except Exception:  # the next round tries again; the daemon keeps running
                LOG.exception("alarm evaluation failed")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the evaluation in progress, if any (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()


# ---- PutMetricAlarm: the state of a new and of an updated alarm ----------------------------------
_STATE_ATTRIBUTES = (
    "state_value",
    "state_reason",
    "state_reason_data",
    "state_updated_timestamp",
    "history",
)


def _patched_put_metric_alarm(original: Any) -> Any:
    def put_metric_alarm(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = kwargs["name"] if "name" in kwargs else args[0]
        existing = self.alarms.get(name)
        alarm = original(self, *args, **kwargs)
        if existing is not None:
            for attribute in _STATE_ATTRIBUTES:  # "its state is left unchanged"
                setattr(alarm, attribute, getattr(existing, attribute))
        else:  # "the alarm state is immediately set to INSUFFICIENT_DATA"
            alarm.state_value = INSUFFICIENT_DATA
        return alarm

    put_metric_alarm.__wrapped__ = original  # type: ignore[attr-defined]
    return put_metric_alarm


# ---- GetMetricStatistics: one metric is one exact combination of dimensions ----------------------
def _patched_get_metric_statistics(original: Any) -> Any:
    def get_metric_statistics(self: Any, *args: Any, **kwargs: Any) -> Any:
        # moto's signature: (namespace, metric_name, start_time, end_time, period, stats,
        # dimensions, unit); its responses pass `dimensions` by keyword
        requested = kwargs["dimensions"] if "dimensions" in kwargs else (args[6:7] or [[]])[0]
        wanted = {(d["Name"], d.get("Value")) for d in requested or []}
        exact = []
        for statistics in original(self, *args, **kwargs):
            statistics.metric_data = [
                datum
                for datum in statistics.metric_data
                if len(datum.dimensions) == len(wanted)
                and {(d.name, d.value) for d in datum.dimensions} == wanted
            ]
            if statistics.metric_data:
                exact.append(statistics)
        return exact

    get_metric_statistics.__wrapped__ = original  # type: ignore[attr-defined]
    return get_metric_statistics


def patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, replacement builder) for every CloudWatch attribute replaced here."""
    from moto.cloudwatch.models import CloudWatchBackend

    return [
        (CloudWatchBackend, "put_metric_alarm", _patched_put_metric_alarm),
        (CloudWatchBackend, "get_metric_statistics", _patched_get_metric_statistics),
    ]
