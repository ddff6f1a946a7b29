"""Glue job: ingest one uploaded customer CSV (validate, quarantine, curate, load, audit).

Runs unchanged on AWS Glue 5.0 and on local Spark (the twin and the tests call `main`). All the
work is `churnops.ingestion.ingest_object`; this script only resolves arguments.

Job arguments (`--name value`; Glue passes DefaultArguments merged with the run's Arguments):

  --source_bucket    bucket the file was uploaded to (the raw bucket)
  --source_key       object key, as in the EventBridge "Object Created" event (incoming/...csv)
  --curated_bucket   bucket for curated/ Parquet and quarantine/ rows
  --db_secret_arn    Secrets Manager secret (RDS shape) with the database credentials
  --contract_name    data contract to validate against (optional, default: telco)
  --staging_method   how tasks send rows to the run's staging table: auto | load_data | insert
                     (optional, default: auto = LOAD DATA LOCAL INFILE when the server allows
                     it, else multi-row INSERTs)
  --stale_run_minutes  a run still `running` after this long died; this run closes its audit
                     row (optional; the stack passes the job's timeout)
  --split_bytes      bytes of the file per Spark task (optional, default 0: a multiple of the
                     executor cores, at most 32 MiB each; see churnops.csv_splits)

A file-level problem moves the file to failed/ and then fails the job (so the state machine's
Catch alerts); a database or S3 failure also fails the job and leaves the file for a retry.
"""

from __future__ import annotations

from typing import Any

# Names shared with the CDK construct (stacks/ingestion.py) so neither side restates them.
REQUIRED_ARGS = ("source_bucket", "source_key", "curated_bucket", "db_secret_arn")
OPTIONAL_ARGS = {
    "contract_name": "telco",
    "staging_method": "auto",
    "stale_run_minutes": "2880",  # Glue's longest job timeout
    "split_bytes": "0",
    "db_name": "",  # the stack always passes it: CDK's instance secret has no dbname
}
# Arguments the state machine passes per run; the rest are the job's DefaultArguments.
RUN_ARGS = ("source_bucket", "source_key")


def main(argv: list[str] | None = None, spark: Any = None) -> dict[str, Any]:
    """Ingest the object named by the arguments on `spark` (Glue's session when None, started
    only once the header has passed); returns the run summary."""
    import logging

    from churnops.gluejob import resolve_args
    from churnops.ingestion import ingest_object, request_from_args

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = resolve_args(argv, REQUIRED_ARGS, OPTIONAL_ARGS)
    result = ingest_object(request_from_args(args), spark)
    return result.to_dict()


if __name__ == "__main__":
    main()
