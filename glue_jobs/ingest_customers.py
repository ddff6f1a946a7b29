"""Glue job: ingest one uploaded customer CSV (validate, quarantine, curate, load, audit).

Runs unchanged on AWS Glue 5.0 and on local Spark (the twin and the tests call `main`). All the
work is `churnops.ingestion.ingest_object`; this script only resolves arguments.

Job arguments (`--name value`; Glue passes DefaultArguments merged with the run's Arguments;
`churnops.wiring.IngestArgs` defines them for this script and for the CDK construct):

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
  --db_name          the database (the stack passes it: CDK's instance secret has no dbname)
  --incoming_prefix  the raw bucket's upload prefix (optional, default incoming/): a rejected
                     file keeps its path below it under failed/

A file-level problem moves the file to failed/ and then fails the job (so the state machine's
Catch alerts); a database or S3 failure also fails the job and leaves the file for a retry.
"""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None, spark: Any = None) -> dict[str, Any]:
    """Ingest the object named by the arguments on `spark` (Glue's session when None, started
    only once the header has passed); returns the run summary."""
    import logging

    from churnops.gluejob import resolve_args
    from churnops.ingestion import IngestRequest, ingest_object
    from churnops.wiring import IngestArgs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    resolved = resolve_args(argv, IngestArgs.required_args(), IngestArgs.optional_args())
    result = ingest_object(IngestRequest.from_args(IngestArgs.from_args(resolved)), spark)
    return result.to_dict()


if __name__ == "__main__":
    main()
