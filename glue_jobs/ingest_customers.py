"""Glue job: ingest one uploaded customer CSV (validate, quarantine, curate, load, audit).

Runs unchanged on AWS Glue 5.0 and on local Spark (the twin and the tests call `main`). All the
work is `churnops.ingestion.ingest_object`; this script only resolves arguments.

Job arguments (`--name value`; Glue passes DefaultArguments merged with the run's Arguments):

  --source_bucket    bucket the file was uploaded to (the raw bucket)
  --source_key       object key, as in the EventBridge "Object Created" event (incoming/...csv)
  --curated_bucket   bucket for curated/ Parquet and quarantine/ rows
  --db_secret_arn    Secrets Manager secret (RDS shape) with the database credentials
  --contract_name    data contract to validate against (optional, default: telco)
  --load_strategy    how rows reach the table: direct (one transaction writes them into the
                     table) | staged (a temporary table, then one merge transaction);
                     default: direct, which writes the rows once (see churnops.database)
  --staging_method   how rows are sent: auto | load_data | insert (optional, default: auto =
                     LOAD DATA LOCAL INFILE when the server allows it, else multi-row INSERTs)

A file-level problem moves the file to failed/ and then fails the job (so the state machine's
Catch alerts); a database or S3 failure also fails the job and leaves the file for a retry.
"""

from __future__ import annotations

from typing import Any

# Names shared with the CDK construct (stacks/ingestion.py) so neither side restates them.
REQUIRED_ARGS = ("source_bucket", "source_key", "curated_bucket", "db_secret_arn")
OPTIONAL_ARGS = {
    "contract_name": "telco",
    "load_strategy": "direct",
    "staging_method": "auto",
    "db_name": "",  # the stack always passes it: CDK's instance secret has no dbname
}
# Arguments the state machine passes per run; the rest are the job's DefaultArguments.
RUN_ARGS = ("source_bucket", "source_key")


def main(argv: list[str] | None = None, spark: Any = None) -> dict[str, Any]:
    """Ingest the object named by the arguments; returns the run summary.

    `spark` is accepted for the common Glue entry-point signature but this job does not start
    a session: one file is validated and loaded faster on the driver (see churnops.ingestion)."""
    import logging

    from churnops.gluejob import resolve_args
    from churnops.ingestion import ingest_object, request_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = resolve_args(argv, REQUIRED_ARGS, OPTIONAL_ARGS)
    result = ingest_object(request_from_args(args))
    return result.to_dict()


if __name__ == "__main__":
    main()
