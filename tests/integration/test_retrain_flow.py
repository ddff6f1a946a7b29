"""The retrain flow end to end: the state machines CDK synthesizes from the Retrain construct
(the retrain and the rollout it hands a passed challenger to) are provisioned in moto by the
twin's provisioner (intrinsics resolved to the twin's names) and EXECUTED by moto's Step
Functions, with every task body routed to our real handlers and Glue script through
`churnops.local.moto_ext`. The database is a private MariaDB, the registry is S3 (moto), batch
scoring runs on local Spark. The rollout's bakes are zero here (its alarms are quiet: no
traffic); tests/e2e/test_twin_rollout.py runs real bakes with traffic and alarms.

Each scenario sets the customer table and the registry, starts an execution, follows the rollout
it starts, and checks the outcome in the registry, the decision history, the alert topic and the
scores.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from churnops.contract import TELCO

# A Glue job runs here: ./dev test runs this module again on the two-node Spark cluster.
pytestmark = pytest.mark.glue_job

REPO = Path(__file__).resolve().parents[2]
STACK = "RetrainFlow"
ROWS = 1600
DATABASE_NAME = "churn_analytics"
FAST_TRAINING = {"families": ("logistic",), "folds": 3}


# ---- the synthesized stack, provisioned ---------------------------------------------------------
def synthesize(outdir: Path) -> dict[str, Any]:
    """The Retrain construct wired to the real Storage, Alerts and Database constructs."""
    import aws_cdk as cdk

    from churnops.wiring import GateSettings, RolloutSettings
    from stacks.retrain import Retrain, RetrainSettings
    from tests.stand_ins import ACCOUNT, REGION, host_constructs

    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, STACK, env=cdk.Environment(account=ACCOUNT, region=REGION))
    host = host_constructs(
        stack,
        name_prefix="retrainflow",
        topic_name="retrain-flow-alerts",
        interface_endpoints=("secretsmanager",),
        # Not the default name: the code must use the configured one, not a literal.
        database_name=DATABASE_NAME,
    )
    Retrain(
        stack,
        "Retrain",
        settings=RetrainSettings(
            name_prefix="retrainflow",
            # Small but real: 300 resamples, one model family, 3 folds (speed of the test only).
            gate=GateSettings(n_bootstrap=300),
            training_families=FAST_TRAINING["families"],
            training_folds=FAST_TRAINING["folds"],
            retry_attempts=2,
        ),
        platform=host.platform,
        # No bake: every check finds the (quiet) alarms OK and advances at once.
        rollout=RolloutSettings(
            shadow_bake_seconds=0, canary_bake_seconds=0, check_interval_seconds=1
        ),
    )
    app.synth()
    return json.loads((outdir / f"{STACK}.template.json").read_text())


class Twin:
    """The provisioned resources and the helpers the scenarios drive them with."""

    def __init__(self, layout: Any, mariadb: Any) -> None:
        self.layout = layout
        self.mariadb = mariadb
        self.registry_uri = layout.registry_uri
        self.curated = layout.curated_bucket
        self.state_machine = layout.retrain_state_machine
        self.rollout_state_machine = layout.rollout_state_machine
        self.alert_queue = ""
        self.event_queue = ""

    # -- database -------------------------------------------------------------------------------
    def load_customers(self, clean: pd.DataFrame) -> None:
        """Replace the customer table's rows with `clean`."""
        from churnops import database

        conn = database.connect(self.layout.db_secret_arn, database=self.layout.database_name)
        try:
            database.ensure_schema(conn, TELCO)
            with conn.cursor() as cur:
                cur.execute(f"DELETE FROM `{TELCO.table}`")
                cur.execute(f"DELETE FROM `{database.SCORES_TABLE}`")
                database.insert_batches(cur, TELCO.table, TELCO.column_names, clean, 5000)
            conn.commit()
        finally:
            conn.close()

    def scores(self) -> pd.DataFrame:
        from churnops import database

        conn = database.connect(self.layout.db_secret_arn, database=self.layout.database_name)
        try:
            return database.read_table(conn, database.SCORES_TABLE, order_by=TELCO.id_column)
        finally:
            conn.close()

    # -- registry -------------------------------------------------------------------------------
    @property
    def registry(self) -> Any:
        from churnops.registry import Registry

        return Registry.open(self.registry_uri)

    def clear_registry(self) -> None:
        from churnops.aws import client, split_s3_uri

        bucket, prefix = split_s3_uri(self.registry_uri)
        s3 = client("s3")
        for page in s3.get_paginator("list_object_versions").paginate(
            Bucket=bucket, Prefix=prefix + "/"
        ):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])

    def register_champion(self, clean: pd.DataFrame) -> str:
        """Train a model on `clean` with the real training code and make it champion."""
        from churnops.training import TrainingOptions, train

        result = train(clean, TELCO, TrainingOptions(**FAST_TRAINING))
        assert result.status == "champion-eligible", result.reason
        version = self.registry.register(result.files, result.card)
        self.registry.promote(version, actor="test", reason="test champion")
        return version

    def register_candidates(self, clean: pd.DataFrame, count: int) -> list[str]:
        """`count` promotable versions (one trained model registered several times)."""
        from churnops.training import TrainingOptions, train

        result = train(clean, TELCO, TrainingOptions(**FAST_TRAINING))
        return [self.registry.register(result.files, result.card) for _ in range(count)]

    # -- executions -----------------------------------------------------------------------------
    def start(self) -> str:
        from churnops.aws import client

        return client("stepfunctions").start_execution(
            stateMachineArn=self.state_machine,
            name=f"test-{secrets.token_hex(4)}",
            input=json.dumps({"trigger": "test"}),
        )["executionArn"]

    def wait(self, execution_arn: str, limit: float = 600) -> dict[str, Any]:
        """The execution once it ended; a retrain that handed its challenger over has the
        rollout execution's outcome under "rollout", followed to its end too."""
        from churnops.aws import client

        sfn = client("stepfunctions")
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            described = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] != "RUNNING":
                if described.get("output"):
                    described["state"] = json.loads(described["output"])
                if described["status"] == "FAILED":
                    from churnops.local.flows import failed_step

                    # Which step, with what error: what an assertion on the status shows.
                    described["failed_step"] = failed_step(execution_arn)
                handed = described.get("state", {}).get("rollout_execution")
                if handed:
                    described["rollout"] = self.wait(handed["ExecutionArn"], limit)
                return described
            time.sleep(0.5)
        raise AssertionError(f"{execution_arn} still running after {limit}s")

    def run(self) -> dict[str, Any]:
        return self.wait(self.start())

    # -- queues ---------------------------------------------------------------------------------
    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        from churnops.aws import client

        sqs = client("sqs")
        out = []
        while True:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            messages = got.get("Messages", [])
            if not messages:
                return out
            for message in messages:
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture(scope="module")
def twin(spark, moto_ext, mariadb, tmp_path_factory) -> Twin:  # type: ignore[no-untyped-def]
    from churnops.aws import client
    from churnops.local.provision import DatabaseEndpoint, Provisioner

    outdir = tmp_path_factory.mktemp("retrain_cdk_out")
    template = synthesize(outdir)

    def grant(user: str, dbname: str) -> str:
        password = secrets.token_urlsafe(16)
        mariadb.create_database(dbname)
        mariadb.create_user(user, password, dbname)
        return password

    layout = Provisioner(
        template,
        cdk_out=outdir,
        repo_root=REPO,
        database=DatabaseEndpoint(mariadb.host, mariadb.port, "mariadb", grant),
        stack_name=STACK,
    ).provision()
    assert layout.retrain_state_machine, "the provisioner found no scheduled state machine"
    twin = Twin(layout, mariadb)

    # Observe what the flow publishes: alerts (SNS -> SQS) and promotion events (rule -> SQS).
    sqs, sns, events = client("sqs"), client("sns"), client("events")
    twin.alert_queue = sqs.create_queue(QueueName="retrain-alerts")["QueueUrl"]
    alerts_arn = sqs.get_queue_attributes(QueueUrl=twin.alert_queue, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    (topic_arn,) = layout.topics.values()
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=alerts_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    twin.event_queue = sqs.create_queue(QueueName="retrain-promotions")["QueueUrl"]
    events_arn = sqs.get_queue_attributes(QueueUrl=twin.event_queue, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="retrain-promotions",
        EventPattern=json.dumps(
            {"source": ["churnops.registry"], "detail-type": ["ChampionPromoted"]}
        ),
    )
    events.put_targets(Rule="retrain-promotions", Targets=[{"Id": "queue", "Arn": events_arn}])
    return twin


# ---- data ---------------------------------------------------------------------------------------
def customers(rows: int = ROWS, seed: int = 1, shift: str | None = None) -> pd.DataFrame:
    """Clean customers from the synthetic generator, through the contract's validation."""
    from churnops.synthetic import generate

    raw = generate(rows, seed=seed, shift=shift)
    text = raw.astype(object).where(raw.notna(), "").astype(str)
    result = TELCO.validate(text)
    assert result.rejected.empty
    return result.clean


def scrambled(clean: pd.DataFrame, columns: tuple[str, ...], seed: int = 0) -> pd.DataFrame:
    """The same customers with some strong churn drivers shuffled across rows: a model trained on
    it still has skill from the other columns, but clearly less."""
    rng = np.random.default_rng(seed)
    out = clean.copy()
    for column in columns:
        out[column] = out[column].to_numpy()[rng.permutation(len(out))]
    return out


@pytest.fixture(scope="module")
def current() -> pd.DataFrame:
    return customers(seed=1)


def steps(execution: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v["Payload"]
        for k, v in execution["state"].items()
        if isinstance(v, dict) and "Payload" in v
    }


def history(twin: Twin, version: str) -> list[str]:
    return [h["action"] for h in twin.registry.history() if h["version"] == version]


# ---- scenarios ----------------------------------------------------------------------------------
def test_the_database_is_named_by_the_stack_not_by_the_secret(twin: Twin) -> None:
    """CDK's generated instance secret has no `dbname`; the stack passes the configured name
    (here not the default) and every step reaches that database (the flow tests below load and
    snapshot customers there)."""
    from churnops.aws import client

    secret = client("secretsmanager").get_secret_value(SecretId=twin.layout.db_secret_arn)
    assert "dbname" not in json.loads(secret["SecretString"])
    assert twin.layout.database_name == DATABASE_NAME


def test_first_retrain_promotes_a_skilled_model_and_batch_scores(twin: Twin, current) -> None:  # type: ignore[no-untyped-def]
    # GIVEN customers in the database and an empty registry (the first retrain)
    twin.clear_registry()
    twin.load_customers(current)
    twin.drain(twin.event_queue)
    # WHEN the retrain flow runs
    execution = twin.run()
    # THEN the challenger is handed to the rollout, which promotes it directly as the first
    # champion (nothing to compare a candidate with)
    assert execution["status"] == "SUCCEEDED", execution.get("failed_step") or execution
    out = steps(execution)
    rollout = execution["rollout"]
    assert rollout["status"] == "SUCCEEDED", rollout
    released = steps(rollout)["rollout"]
    assert released["stage"] == "full" and released["rollout_id"] is None
    version = out["train"]["version"]
    assert out["evaluate"]["promote"] is True
    assert out["evaluate"]["champion_version"] is None
    assert out["drift"]["status"] == "no_champion"
    pointer = twin.registry.champion()
    assert pointer["version"] == version and pointer["previous_version"] is None
    assert history(twin, version) == ["promote", "gate_passed"]
    # ... the snapshot says what it froze
    assert out["snapshot"]["rows"] == len(current)
    assert len(out["snapshot"]["sha256"]) == 64
    card = twin.registry.card(version)
    assert card["retrain"]["snapshot_sha256"] == out["snapshot"]["sha256"]
    assert twin.registry.has_file(version, "drift_report.json")
    # ... a ChampionPromoted event was published
    (event,) = twin.drain(twin.event_queue)
    assert event["source"] == "churnops.registry" and event["detail-type"] == "ChampionPromoted"
    assert event["detail"]["version"] == version
    # ... and every customer was batch-scored into Parquet and the database
    assert rollout["state"]["batch_score"]["JobRunState"] == "SUCCEEDED"
    scores = twin.scores()
    assert len(scores) == len(current)
    assert set(scores["model_version"]) == {version}
    predictions = read_predictions(twin, released["processing_date"])
    assert sorted(predictions[TELCO.id_column]) == sorted(current[TELCO.id_column])


def test_better_challenger_is_promoted(twin: Twin, current) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a champion trained without the strongest drivers (contract, tenure, charges to date)
    twin.clear_registry()
    weak = twin.register_champion(scrambled(current, ("Contract", "tenure", "TotalCharges")))
    twin.load_customers(current)
    # WHEN the flow trains a challenger on the real data
    execution = twin.run()
    # THEN it wins by the margin with the paired interval above zero, and becomes champion
    # through its rollout: shadow, canary, full, then batch scoring with it
    assert execution["status"] == "SUCCEEDED", execution.get("failed_step") or execution
    out = steps(execution)
    assert out["evaluate"]["promote"] is True, out["evaluate"]["reasons"]
    assert out["evaluate"]["champion_version"] == weak
    assert out["evaluate"]["difference"]["ci"][0] > 0
    assert execution["rollout"]["status"] == "SUCCEEDED", execution["rollout"]
    assert steps(execution["rollout"])["rollout"]["stage"] == "full"
    assert execution["rollout"]["state"]["batch_score"]["JobRunState"] == "SUCCEEDED"
    pointer = twin.registry.champion()
    assert pointer["version"] == out["train"]["version"]
    assert pointer["previous_version"] == weak
    assert pointer["sequence"] == 2
    assert history(twin, pointer["version"]) == [
        "rollout_start",
        "gate_passed",
        "rollout_advance",
        "promote",
        "rollout_advance",
    ]
    assert set(twin.scores()["model_version"]) == {pointer["version"]}


def test_equal_or_worse_challenger_is_not_promoted(twin: Twin, current) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a champion of the same recipe trained on ALL current customers (holdout included):
    # the challenger can at best tie with it
    twin.clear_registry()
    strong = twin.register_champion(current)
    twin.load_customers(current)
    before = (twin.registry.champion(), twin.registry.champion_etag())
    # WHEN the flow runs
    execution = twin.run()
    # THEN the challenger is recorded as rejected with the failed check, the champion untouched
    assert execution["status"] == "SUCCEEDED", execution.get("failed_step") or execution
    out = steps(execution)
    assert out["evaluate"]["promote"] is False
    assert "reject" in out and "rollout_execution" not in execution["state"]
    assert any("needs >=" in r for r in out["reject"]["reasons"]), out["reject"]["reasons"]
    assert (twin.registry.champion(), twin.registry.champion_etag()) == before
    assert twin.registry.champion()["version"] == strong
    assert history(twin, out["train"]["version"]) == ["rejected"]


def test_no_skill_challenger_is_not_promoted(twin: Twin, current) -> None:  # type: ignore[no-untyped-def]
    # GIVEN customers whose churn label is unrelated to anything (labels shuffled), no champion
    twin.clear_registry()
    noise = current.copy()
    noise[TELCO.target_column] = (
        noise[TELCO.target_column].sample(frac=1, random_state=3).to_numpy()
    )
    twin.load_customers(noise)
    # WHEN the flow runs
    execution = twin.run()
    # THEN the model is registered, flagged, rejected, and there is still no champion
    assert execution["status"] == "SUCCEEDED", execution.get("failed_step") or execution
    out = steps(execution)
    assert out["train"]["status"] in ("no_skill", "below_floor")
    assert out["evaluate"]["promote"] is False
    assert any("chance" in r or "floor" in r for r in out["reject"]["reasons"])
    assert twin.registry.champion() is None


def test_failing_step_alerts_and_leaves_the_champion_as_it_was(twin: Twin, current) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a champion, and a table with too few churners to train on
    twin.clear_registry()
    strong = twin.register_champion(current)
    before = (twin.registry.champion(), twin.registry.champion_etag())
    few = current.copy()
    churners = np.flatnonzero(TELCO.target_vector(few) == 1)[5:]
    few.loc[churners, TELCO.target_column] = TELCO.negative_label
    twin.load_customers(few)
    twin.drain(twin.alert_queue)
    # WHEN the flow runs
    execution = twin.run()
    # THEN it fails through the catch, an alert names the error, and the champion is unchanged
    assert execution["status"] == "FAILED"
    assert execution.get("error") == "RetrainFailed"
    alerts = twin.drain(twin.alert_queue)
    assert len(alerts) == 1
    assert alerts[0]["error"] == "ChurnOpsError"
    assert "churned" in alerts[0]["cause"]
    assert (twin.registry.champion(), twin.registry.champion_etag()) == before
    assert twin.registry.champion()["version"] == strong


def test_two_concurrent_flows_promote_exactly_one(twin: Twin, current) -> None:  # type: ignore[no-untyped-def]
    # GIVEN a weak champion both challengers will beat
    twin.clear_registry()
    weak = twin.register_champion(scrambled(current, ("Contract", "tenure", "TotalCharges")))
    twin.load_customers(current)
    twin.drain(twin.alert_queue)
    # WHEN two executions run at the same time
    first, second = twin.start(), twin.start()
    results = [twin.wait(first), twin.wait(second)]
    # THEN exactly one challenger's rollout reached full; the other was compared with the new
    # champion and rejected, or its rollout could not start (another rollout active, or the
    # champion it was judged against moved) and failed cleanly into the alert
    promoted = [
        r
        for r in results
        if r.get("rollout", {}).get("status") == "SUCCEEDED"
        and steps(r["rollout"])["rollout"]["stage"] == "full"
    ]
    assert len(promoted) == 1, [(r["status"], r.get("rollout", {}).get("status")) for r in results]
    (other,) = [r for r in results if r is not promoted[0]]
    if "rollout" in other:
        assert other["rollout"]["status"] == "FAILED"
        errors = json.dumps(twin_alert_errors(twin))
        assert "ConcurrentUpdateError" in errors or "ChurnOpsError" in errors, errors
    else:
        assert "reject" in steps(other)
    pointer = twin.registry.champion()
    assert pointer["version"] == steps(promoted[0])["train"]["version"]
    assert pointer["previous_version"] == weak and pointer["sequence"] == 2


def twin_alert_errors(twin: Twin) -> list[str]:
    return [a.get("error", "") for a in twin.drain(twin.alert_queue)]


def test_racing_rollouts_of_one_evaluation_cannot_both_start(twin: Twin, current) -> None:  # type: ignore[no-untyped-def]
    """The rollout step itself, raced from threads against S3 (moto) conditional writes."""
    from churnops.errors import ChurnOpsError
    from churnops.retrain import flow, rollout

    twin.clear_registry()
    champion = twin.register_champion(scrambled(current, ("Contract", "tenure")))
    env = flow.RetrainEnv(
        registry_uri=twin.registry_uri, curated_bucket=twin.curated, contract=TELCO
    )
    challengers = twin.register_candidates(current, 4)
    etag = twin.registry.champion_etag()
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(len(challengers))

    def start(version: str) -> None:
        state = {
            "snapshot": {"Payload": {"run_id": f"race-{version}", "sha256": "0" * 64}},
            "evaluate": {
                "Payload": {
                    "promote": True,
                    "challenger_version": version,
                    "champion_version": champion,
                    "champion_etag": etag,
                    "evaluation_uri": "s3://unused/evaluation.json",
                    "primary_metric": "roc_auc",
                    "challenger_metric": 0.9,
                    "champion_metric": 0.7,
                    "difference": {"point": 0.2, "ci": [0.1, 0.3]},
                    "summary": "race",
                }
            },
        }
        barrier.wait()
        try:
            outcomes[version] = rollout.rollout_step(env, state)
        except ChurnOpsError as err:  # ConcurrentUpdateError is one
            outcomes[version] = err

    threads = [threading.Thread(target=start, args=(v,)) for v in challengers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [v for v, o in outcomes.items() if isinstance(o, dict)]
    assert len(winners) == 1, outcomes
    record = twin.registry.active_rollout()
    assert record["version"] == winners[0] and record["champion_version"] == champion
    # The champion is untouched: a rollout starts beside it.
    assert twin.registry.champion()["version"] == champion
    starts = [h["version"] for h in twin.registry.history() if h["action"] == "rollout_start"]
    assert starts == winners
    twin.registry.abort_rollout(actor="test", reason="end of the race")


def test_drift_report_flags_exactly_the_shifted_features(twin: Twin, tmp_path: Path) -> None:
    # GIVEN a champion trained on normal customers, and newer customers from `churnops data
    # generate --shift price_rise,payment_mix` (monthly charges up 30%, and most customers moved
    # to electronic cheques; every other input distribution unchanged)
    from churnops.aws import client
    from churnops.cli import main as cli
    from churnops.dataset import read_customers
    from churnops.retrain.drift import run_drift

    shifted_features = {"MonthlyCharges", "PaymentMethod"}
    twin.clear_registry()
    twin.register_champion(customers(seed=5))
    shifted_csv = tmp_path / "shifted.csv"
    generated = cli(
        ["data", "generate", "--rows", str(ROWS), "--seed", "6", "--shift",
         "price_rise,payment_mix", "--out", str(shifted_csv)]
    )  # fmt: skip
    assert generated == 0
    shifted = TELCO.validate(read_customers(shifted_csv, TELCO)).clean
    # WHEN the drift step compares them with the champion's reference statistics
    key = "snapshots/drift-test/drift_report.json"
    summary = run_drift(twin.registry, shifted, TELCO, report_uri=f"s3://{twin.curated}/{key}")
    # THEN exactly the shifted features have PSI > 0.2; the others stay below it (TotalCharges,
    # which follows the monthly charge, moves a little but is not flagged)
    report = json.loads(client("s3").get_object(Bucket=twin.curated, Key=key)["Body"].read())
    psi = {name: f["psi"] for name, f in report["features"].items()}
    assert set(summary["drifted_features"]) == shifted_features, psi
    assert all(psi[name] > 0.2 for name in shifted_features)
    assert all(value <= 0.2 for name, value in psi.items() if name not in shifted_features), psi
    assert summary["max_psi"] == max(psi.values())
    assert {name for name in psi if psi[name] > 0.2} == set(report["drifted_features"])
    # ... and published for the alert-only snapshot drift alarm, never as the live drift metric
    # whose alarm starts a retrain (a retrain finding drift must not start another)
    cloudwatch = client("cloudwatch")
    listed = cloudwatch.list_metrics(Namespace="ChurnOps", MetricName="SnapshotMaxFeaturePSI")
    assert listed["Metrics"], "SnapshotMaxFeaturePSI was not published"
    live = cloudwatch.list_metrics(Namespace="ChurnOps", MetricName="LiveMaxFeaturePSI")
    assert not live["Metrics"], "the retrain published the metric that starts retrains"


def test_batch_and_online_scoring_agree(twin: Twin, current, spark, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The same champion through the Glue job (ONNX in its Spark tasks), through churnops.scoring
    (scikit-learn) and through the serving app gives the same probabilities."""
    from churnops.aws import client
    from churnops.scoring import load_model, score
    from churnops.serving.app import HttpRequest, ServingApp

    monkeypatch.syspath_prepend(str(REPO))  # glue_jobs/ is scripts, not an installed package
    from glue_jobs import batch_score

    twin.clear_registry()
    version = twin.register_champion(current)
    sample = current.sample(300, random_state=4).reset_index(drop=True)
    buffer = io.BytesIO()
    sample.to_parquet(buffer, index=False)
    client("s3").put_object(
        Bucket=twin.curated, Key="snapshots/parity/customers.parquet", Body=buffer.getvalue()
    )
    # Batch: the Glue job's own entry point, as Glue would call it (no database this time).
    result = batch_score.main(
        [
            "--registry_uri",
            twin.registry_uri,
            "--input_uri",
            f"s3://{twin.curated}/snapshots/parity/customers.parquet",
            "--curated_bucket",
            twin.curated,
            "--processing_date",
            "2030-01-02",
        ],
        spark=spark,
    )
    assert result["rows"] == len(sample) and result["model_version"] == version
    batch = read_predictions(twin, "2030-01-02").set_index(TELCO.id_column)
    # Online 1: churnops.scoring (the scikit-learn pipeline).
    offline = score(sample, load_model(twin.registry, TELCO), TELCO).set_index(TELCO.id_column)
    # Online 2: the serving app (ONNX Runtime behind the API handler).
    app = ServingApp.from_environ({"REGISTRY_URI": twin.registry_uri, "CONTRACT_NAME": TELCO.name})
    body = {"customers": TELCO.api_customers(sample)}
    response, _ = app.handle(
        HttpRequest.from_proxy_event(
            {
                "httpMethod": "POST",
                "path": "/predict",
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps(body),
                "isBase64Encoded": False,
            }
        )
    )
    assert response.status == 200, response.body
    online = pd.DataFrame(response.body["predictions"]).set_index(TELCO.id_column)
    ids = sample[TELCO.id_column]
    np.testing.assert_allclose(
        batch.loc[ids, "churn_probability"], offline.loc[ids, "churn_probability"], atol=1e-5
    )
    np.testing.assert_allclose(
        batch.loc[ids, "churn_probability"], online.loc[ids, "churn_probability"], atol=1e-5
    )
    assert (
        batch.loc[ids, "churn_prediction"].to_numpy()
        == offline.loc[ids, "churn_prediction"].to_numpy()
    ).mean() > 0.99


def read_predictions(twin: Twin, processing_date: str) -> pd.DataFrame:
    """The committed scores of a date, read through the partition's manifest as readers do."""
    from churnops.batch_scoring import read_committed

    frame = read_committed(twin.curated, "predictions", processing_date)
    assert not frame.empty, f"no committed predictions for {processing_date}"
    return frame
