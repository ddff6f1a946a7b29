"""Glue job: score every customer of a snapshot with the champion, in bulk.

Runs unchanged on AWS Glue 5.0 and on local Spark (the twin and the tests call `main`). All the
work, and why it is shaped for executors without the driver's disk, is
`churnops.batch_scoring.run_batch_score`; this script only resolves arguments.

Job arguments (`--name value`): the fields of `churnops.wiring.BatchScoreArgs`, which the stack
(stacks/batch_scoring.py) builds them from too:

  --registry_uri     the model registry (s3://bucket/models)
  --input_uri        the snapshot: a prefix ending in "/" (every .parquet under it) or one object
  --curated_bucket   bucket whose `<output_prefix>/processing_date=<date>/` receives the scores
  --model_version    optional; default: the current champion
  --processing_date  optional, YYYY-MM-DD; default: today (UTC)
  --db_secret_arn    optional; when set, the latest score per customer is upserted into
                     `churn_scores` (the RDS secret, read through Secrets Manager)
  --db_name          the database (the stack passes it: CDK's instance secret has no dbname)
  --contract_name    optional contract name (default telco)
  --output_prefix    optional (default predictions)
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None, spark: Any = None) -> dict[str, Any]:
    """Score the snapshot named by the arguments on `spark` (Glue's session when None); returns
    the job's summary."""
    import logging

    from churnops.batch_scoring import run_batch_score
    from churnops.gluejob import resolve_args
    from churnops.wiring import BatchScoreArgs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = resolve_args(argv, BatchScoreArgs.required_args(), BatchScoreArgs.optional_args())
    return run_batch_score(spark, BatchScoreArgs.from_args(args))


if __name__ == "__main__":
    main()
