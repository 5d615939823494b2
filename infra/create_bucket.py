"""Create the MLflow artifact bucket if it is missing (the compose `createbucket` one-shot job).

Reads MLFLOW_BUCKET, MLFLOW_S3_ENDPOINT_URL and the standard AWS_* credentials, waits up to
BUCKET_WAIT_S (60) seconds for the object store to answer, and exits 0 when the bucket exists.
It runs before `mlflow server` on every `docker compose up`, so it must be idempotent.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError


def ensure_bucket(bucket: str, endpoint: str | None, wait_s: float = 60.0) -> str:
    """Create `bucket` unless it exists; returns 'created' or 'exists'."""
    s3 = boto3.client("s3", endpoint_url=endpoint or None)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            s3.head_bucket(Bucket=bucket)
            return "exists"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise  # 403: the credentials are wrong; waiting will not fix it
            s3.create_bucket(Bucket=bucket)
            return "created"
        except BotoCoreError as exc:  # the store is not up yet (connection refused, DNS)
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"create_bucket: {endpoint or 'S3'} did not answer within {wait_s:.0f} s: {exc}"
                ) from None
            time.sleep(1)


def main() -> None:
    """Entry point of the compose job."""
    bucket = os.environ.get("MLFLOW_BUCKET", "").strip()
    if not bucket:
        sys.exit("create_bucket: MLFLOW_BUCKET is not set")
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    state = ensure_bucket(bucket, endpoint, float(os.environ.get("BUCKET_WAIT_S", 60)))
    print(f"create_bucket: bucket {bucket!r} {state} at {endpoint or 'AWS S3'}", flush=True)


if __name__ == "__main__":
    main()
