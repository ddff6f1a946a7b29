"""Object storage: the one S3 object adapter (functions by bucket and key, below), and a small
key-value interface (`Storage`) over a local directory or an ``s3://`` prefix.

The S3 functions are how every module reads and writes S3 objects, ranged reads and
`S3RangeFile` included; their error convention is stated with them. The model registry (and anything else that keeps a few files) is written against `Storage`, so the
same code runs on a laptop, in the local twin (moto) and in AWS. Keys are '/'-separated paths
relative to the root.

Two writes matter for correctness and both are atomic on each backend:
- `put_if_absent`: write-once objects (registry versions, history). S3: ``IfNoneMatch="*"``;
  local: the bytes go to a temporary file that is then hard-linked into place, and ``link``
  fails when the target exists, so a reader never sees a half-written file.
- `replace_if_match`: compare-and-swap on an entity tag (the champion pointer). S3:
  ``IfMatch=<etag>`` (or ``IfNoneMatch="*"`` when the object should not exist yet); local: an
  exclusive lock file serialises writers, the current tag is re-checked under the lock and the
  new bytes are moved into place with ``os.replace``.

Only the standard library and boto3 are imported: the serving image has no pandas.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from churnops.errors import ChurnOpsError


class ObjectNotFoundError(ChurnOpsError):
    """The key does not exist."""


class ObjectExistsError(ChurnOpsError):
    """A write-once key already exists."""


class PreconditionFailedError(ChurnOpsError):
    """A conditional replace lost: the object changed (or appeared) since its tag was read."""


class Storage:
    """Interface shared by `LocalStorage` and `S3Storage`."""

    uri: str

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> str:
        """Unconditional write; returns the new entity tag."""
        raise NotImplementedError

    def put_if_absent(self, key: str, data: bytes) -> str:
        """Write only if the key does not exist; raises `ObjectExistsError` otherwise."""
        raise NotImplementedError

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        """Write only if the object's tag is still `etag` (None: only if it does not exist).

        Raises `PreconditionFailedError` when another writer got there first."""
        raise NotImplementedError

    def etag(self, key: str) -> str | None:
        """The object's current entity tag, or None when it does not exist."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix`, sorted."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.etag(key) is not None


def open_storage(uri: str) -> Storage:
    """``s3://bucket/prefix`` -> `S3Storage`; anything else is a local directory."""
    if uri.startswith("s3://"):
        return S3Storage(uri)
    if "://" in uri:
        raise ChurnOpsError(f"unsupported storage location '{uri}' (use a directory or s3://)")
    return LocalStorage(uri)


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ChurnOpsError(f"invalid storage key '{key}'")
    return key


# ---- local directory --------------------------------------------------------------------------


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalStorage(Storage):
    """A directory. Entity tags are the MD5 of the content (as S3's are for simple uploads)."""

    LOCK_SUFFIX = ".lock"
    LOCK_TIMEOUT_S = 30.0  # a writer holds the lock for milliseconds; older locks are stale

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.uri = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise ChurnOpsError(f"{self.root}: exists and is not a directory")

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"{path}: not found") from None
        return data, _md5(data)

    def _temp_copy(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return Path(tmp)

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp = self._temp_copy(path, data)
        os.replace(tmp, path)
        return _md5(data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp = self._temp_copy(path, data)
        try:
            os.link(tmp, path)  # atomic and fails if the target exists
        except FileExistsError:
            raise ObjectExistsError(f"{path}: already exists (write-once)") from None
        finally:
            tmp.unlink(missing_ok=True)
        return _md5(data)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + self.LOCK_SUFFIX)
        deadline = time.monotonic() + self.LOCK_TIMEOUT_S
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - lock.stat().st_mtime > self.LOCK_TIMEOUT_S:
                        lock.unlink()  # left behind by a crashed writer
                        continue
                if time.monotonic() > deadline:
                    raise PreconditionFailedError(
                        f"{path}: another writer holds {lock.name}"
                    ) from None
                time.sleep(0.005)
        try:
            os.write(fd, f"{os.getpid()}:{threading.get_ident()}".encode())
            os.close(fd)
            yield
        finally:
            lock.unlink(missing_ok=True)

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        path = self._path(key)
        with self._locked(path):
            current = self.etag(key)
            if current != etag:
                raise PreconditionFailedError(f"{path}: changed since it was read")
            tmp = self._temp_copy(path, data)
            os.replace(tmp, path)
        return _md5(data)

    def etag(self, key: str) -> str | None:
        try:
            return _md5(self._path(key).read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        start = self.root / prefix.rstrip("/") if prefix.rstrip("/") else self.root
        base = start if start.is_dir() else start.parent
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            name = path.name
            if not path.is_file() or name.startswith(".") or name.endswith(self.LOCK_SUFFIX):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                keys.append(key)
        return sorted(keys)


# ---- S3 objects ---------------------------------------------------------------------------------
# Every S3 object read and write in churnops goes through these functions (`S3Storage` too), so
# there is one error convention:
# - a missing object is `ObjectNotFoundError` from a read, and None from `head` (the probe);
# - a lost conditional write is `PreconditionFailedError` (what `S3Storage` builds on);
# - a missing bucket is a one-line `ChurnOpsError` (a deployment's mistake, not an absent key);
# - any other AWS error propagates as botocore raised it, so a Step Functions Retry can name
#   EndpointConnectionError and its kind (stacks/retrain.py, TRANSIENT_ERRORS).
# They hold nothing but a boto3 client (from `churnops.aws`, which honours AWS_ENDPOINT_URL and so
# reaches moto in the twin): Spark tasks on Glue executors call them with the driver's disk out of
# reach, and local Spark, which has no hadoop-aws, reads `s3://` through them as well.
_NOT_FOUND = ("NoSuchKey", "404", "NotFound")


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _s3() -> Any:
    from churnops.aws import client

    return client("s3")


@contextlib.contextmanager
def _s3_errors(bucket: str, key: str, *, conditional: bool = False) -> Iterator[None]:
    """Translate the errors a caller acts on; let every other one through."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as err:
        code, status = _error_code(err)
        where = s3_uri(bucket, key)
        if code in _NOT_FOUND:
            raise ObjectNotFoundError(f"no object at {where}") from None
        if code == "NoSuchBucket":
            # S3's own error name stays in the message: the ingest job's failure names it
            raise ChurnOpsError(f"s3://{bucket}: no such bucket (NoSuchBucket)") from None
        if conditional and (code == "PreconditionFailed" or status == 412):
            raise PreconditionFailedError(f"{where}: changed since it was read") from None
        if conditional and (code == "ConditionalRequestConflict" or status == 409):
            # S3 answers 409 when a concurrent conditional write on the same key is in flight.
            raise PreconditionFailedError(f"{where}: a concurrent write is in progress") from None
        raise


def _get(bucket: str, key: str, **extra: Any) -> tuple[bytes, str]:
    with _s3_errors(bucket, key):
        response = _s3().get_object(Bucket=bucket, Key=key, **extra)
        body = response["Body"]
        try:
            return bytes(body.read()), str(response["ETag"]).strip('"')
        finally:
            body.close()


def read_bytes(bucket: str, key: str) -> bytes:
    """The whole object; `ObjectNotFoundError` when there is none."""
    return _get(bucket, key)[0]


def read_with_etag(bucket: str, key: str) -> tuple[bytes, str]:
    return _get(bucket, key)


def read_range(bucket: str, key: str, start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the object, with one ranged GET."""
    if stop <= start:
        return b""
    return _get(bucket, key, Range=f"bytes={start}-{stop - 1}")[0]


def head(bucket: str, key: str) -> dict[str, Any] | None:
    """The object's metadata (ContentLength, ETag, ...), or None when it does not exist."""
    try:
        with _s3_errors(bucket, key):
            return dict(_s3().head_object(Bucket=bucket, Key=key))
    except ObjectNotFoundError:
        return None


def put_bytes(
    bucket: str,
    key: str,
    data: bytes,
    content_type: str | None = None,
    *,
    if_match: str | None = None,
    if_absent: bool = False,
) -> str:
    """Write the object; its new entity tag. `if_absent` or `if_match` (a tag) make the write
    conditional: `PreconditionFailedError` when the condition does not hold."""
    extra: dict[str, Any] = {}
    if content_type is not None:
        extra["ContentType"] = content_type
    if if_absent:
        extra["IfNoneMatch"] = "*"
    if if_match is not None:
        extra["IfMatch"] = f'"{if_match}"'
    with _s3_errors(bucket, key, conditional=bool(if_absent or if_match is not None)):
        response = _s3().put_object(Bucket=bucket, Key=key, Body=data, **extra)
    return str(response["ETag"]).strip('"')


def list_objects(bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix` (Key, Size, ...), in key order."""
    found: list[dict[str, Any]] = []
    with _s3_errors(bucket, prefix):
        pages = _s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            found += page.get("Contents", [])
    return sorted(found, key=lambda o: str(o["Key"]))


def delete_objects(bucket: str, keys: Sequence[str]) -> None:
    s3 = _s3()
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        chunk = keys[start : start + 1000]
        with _s3_errors(bucket, chunk[0]):
            s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
            )


def move(bucket: str, key: str, new_key: str) -> str:
    """Copy then delete: S3 has no rename. A crash in between leaves a copy, never a loss."""
    s3 = _s3()
    with _s3_errors(bucket, key):
        s3.copy_object(Bucket=bucket, Key=new_key, CopySource={"Bucket": bucket, "Key": key})
        s3.delete_object(Bucket=bucket, Key=key)
    return s3_uri(bucket, new_key)


class S3RangeFile(io.RawIOBase):
    """A read-only, seekable file over one S3 object, read with ranged GETs as it is read.

    What lets a Spark task on any node read its own part of an object (a Parquet row group, a
    byte range of a CSV) with boto3 alone: local Spark has no s3a, and on Glue the same code
    runs unchanged. Wrap it in `io.BufferedReader` for small reads (Parquet footers)."""

    def __init__(self, bucket: str, key: str, size: int | None = None) -> None:
        super().__init__()
        self.bucket, self.key = bucket, key
        if size is None:
            meta = head(bucket, key)
            if meta is None:
                raise ObjectNotFoundError(f"no object at {s3_uri(bucket, key)}")
            size = int(meta["ContentLength"])
        self.size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._position >= self.size or len(view) == 0:
            return 0
        stop = min(self.size, self._position + len(view))
        data = read_range(self.bucket, self.key, self._position, stop)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


class S3Storage(Storage):
    """An ``s3://bucket/prefix``, through the S3 object functions above."""

    def __init__(self, uri: str) -> None:
        from churnops.aws import split_s3_uri

        self.uri = uri.rstrip("/")
        self.bucket, prefix = split_s3_uri(self.uri)
        if not self.bucket:
            raise ChurnOpsError(f"'{uri}': no bucket name")
        self.prefix = prefix.strip("/")

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return read_with_etag(self.bucket, self._key(key))

    def put(self, key: str, data: bytes) -> str:
        return put_bytes(self.bucket, self._key(key), data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        try:
            return put_bytes(self.bucket, self._key(key), data, if_absent=True)
        except PreconditionFailedError:
            raise ObjectExistsError(
                f"{s3_uri(self.bucket, self._key(key))}: already exists (write-once)"
            ) from None

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        try:
            return put_bytes(
                self.bucket, self._key(key), data, if_absent=etag is None, if_match=etag
            )
        except ObjectNotFoundError:
            # IfMatch on a key that has gone away: the pointer changed under us all the same.
            raise PreconditionFailedError(
                f"{s3_uri(self.bucket, self._key(key))}: changed since it was read"
            ) from None

    def etag(self, key: str) -> str | None:
        meta = head(self.bucket, self._key(key))
        return None if meta is None else str(meta["ETag"]).strip('"')

    def list(self, prefix: str = "") -> list[str]:
        full = (f"{self.prefix}/" if self.prefix else "") + prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys = [str(o["Key"])[strip:] for o in list_objects(self.bucket, full)]
        return sorted(k for k in keys if k.startswith(prefix))


def _error_code(err: Exception) -> tuple[str, int | None]:
    response = getattr(err, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status
