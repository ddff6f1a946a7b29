"""Batch scoring: the Glue job that scores every customer of a snapshot with the new champion and
writes one `predictions/` partition per day, and the `.sync` step that runs it when a rollout
reaches full (the rollout state machine, stacks/retrain.py).

The job runs in the database's VPC (stacks.flows.vpc_glue_job); what to score comes with each
run, from the promote and snapshot steps' results. Its data grants are exact: it reads the
snapshot and the registry, and writes (and, for a re-run of the same day, replaces) predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aws_cdk import RemovalPolicy
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from churnops.wiring import (
    PREDICTIONS_PREFIX,
    REGISTRY_PREFIX,
    SNAPSHOTS_PREFIX,
    BatchScoreArgs,
    registry_uri,
)
from stacks.flows import GlueJobSize, vpc_glue_job
from stacks.storage import grant_list, grant_object_delete, grant_object_read, grant_object_write

if TYPE_CHECKING:
    from stacks.platform import Platform

BATCH_SCORE_SCRIPT = "batch_score.py"


@dataclass(frozen=True)
class BatchScoring:
    """`job` and its `role`, and `task`: the state-machine step that runs the job and waits
    for it (the caller chains it and decides its retries and catches)."""

    job: glue.CfnJob
    role: iam.Role
    task: tasks.GlueStartJobRun


def batch_scoring(
    scope: Construct,
    *,
    name: str,
    contract_name: str,
    platform: Platform,
    size: GlueJobSize,
    removal: RemovalPolicy,
) -> BatchScoring:
    """Adds the job's resources (`BatchScore*`, see vpc_glue_job) and the step `BatchScore` to
    `scope`, the retrain construct: a function rather than a construct of its own, so the job,
    its role, key and security configuration keep the logical IDs they were deployed with."""
    curated_bucket, registry_bucket = platform.curated_bucket, platform.registry_bucket
    database = platform.database
    args = BatchScoreArgs(
        registry_uri=registry_uri(registry_bucket.bucket_name),
        input_uri=sfn.JsonPath.string_at("$.snapshot.Payload.uri"),
        curated_bucket=curated_bucket.bucket_name,
        model_version=sfn.JsonPath.string_at("$.rollout.Payload.version"),
        processing_date=sfn.JsonPath.string_at("$.rollout.Payload.processing_date"),
        db_secret_arn=database.secret.secret_arn,
        # The instance secret CDK generates has no dbname: the job is told the name.
        db_name=database.database_name,
        contract_name=contract_name,
    )
    # onnxruntime, PyMySQL, ...: what Glue 5.0 lacks, as a zip of wheels built at synth from
    # containers/glue/batch_score.txt (the job's subnets have no route to PyPI).
    glue_job = vpc_glue_job(
        scope,
        asset_id="BatchScore",
        resource_id="BatchScore",
        job_id="BatchScoreJob",
        script=BATCH_SCORE_SCRIPT,
        name=name,
        purpose="batch scoring",
        description="Scores every customer of a snapshot with the champion (mapInPandas)",
        platform=platform,
        arguments=args.default_arguments(),
        size=size,
        max_concurrent_runs=2,
        removal=removal,
    )
    role = glue_job.role
    # The job's plan lists the snapshot's Parquet parts (churnops.batch_scoring), and the
    # registry lists versions.
    grant_object_read(curated_bucket, role, SNAPSHOTS_PREFIX)
    grant_object_read(registry_bucket, role, REGISTRY_PREFIX)
    grant_object_write(curated_bucket, role, PREDICTIONS_PREFIX)
    # Delete: a re-run for the same day replaces that day's partition files.
    grant_object_delete(curated_bucket, role, PREDICTIONS_PREFIX)
    grant_list(curated_bucket, role, PREDICTIONS_PREFIX)

    task = tasks.GlueStartJobRun(
        scope,
        "BatchScore",
        comment="Score every customer of the snapshot with the new champion",
        glue_job_name=glue_job.job.ref,
        integration_pattern=sfn.IntegrationPattern.RUN_JOB,
        arguments=sfn.TaskInput.from_object(args.run_arguments()),
        result_path="$.batch_score",
    )
    return BatchScoring(job=glue_job.job, role=role, task=task)
