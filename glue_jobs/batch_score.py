"""Glue job: score every customer of a snapshot with the champion, in bulk.

Arguments (`--name value`):
  --registry_uri     the model registry (s3://bucket/models)
  --input_uri        the snapshot: a prefix ending in "/" (every .parquet under it) or one object
  --curated_bucket   bucket whose `<output_prefix>/processing_date=<date>/` receives the scores
  --model_version    optional; default: the current champion
  --processing_date  optional, YYYY-MM-DD; default: today (UTC)
  --db_secret_arn    optional; when set, the latest score per customer is upserted into
                     `churn_scores` (the RDS secret, read through Secrets Manager)
  --db_name          the database (the stack passes it: CDK's instance secret has no dbname)
  --contract         optional contract name (default telco)
  --output_prefix    optional (default predictions)

A thin adapter: the work, and why it is shaped for executors without the driver's disk, is in
`churnops.batch_scoring`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

REQUIRED = ["registry_uri", "input_uri", "curated_bucket"]
OPTIONAL = {
    "model_version": "",
    "processing_date": "",
    "db_secret_arn": "",
    "db_name": "",
    "contract": "telco",
    "output_prefix": "predictions",
}


def main(argv: list[str] | None = None, spark: Any = None) -> dict[str, Any]:
    from churnops import gluejob
    from churnops.batch_scoring import BatchScoreRequest, run_batch_score

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = gluejob.resolve_args(argv, required=REQUIRED, optional=OPTIONAL)
    request = BatchScoreRequest(
        registry_uri=args["registry_uri"],
        input_uri=args["input_uri"],
        curated_bucket=args["curated_bucket"],
        contract_name=args["contract"],
        model_version=args["model_version"],
        processing_date=args["processing_date"],
        output_prefix=args["output_prefix"],
        db_secret_arn=args["db_secret_arn"],
        db_name=args["db_name"],
    )
    result = run_batch_score(gluejob.spark_session(spark), request)
    logging.getLogger("churnops.glue.batch_score").info(
        "batch scoring done: %s", json.dumps(result)
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
