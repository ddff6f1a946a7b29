"""One small object-store interface over a local directory and an ``s3://`` prefix.

The model registry (and anything else that keeps a few files) is written against `Storage`, so the
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
import os
import tempfile
import threading
import time
from collections.abc import Iterator
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


# ---- S3 ---------------------------------------------------------------------------------------


class S3Storage(Storage):
    """An ``s3://bucket/prefix``; clients come from `churnops.aws` (honours AWS_ENDPOINT_URL)."""

    def __init__(self, uri: str) -> None:
        from churnops.aws import split_s3_uri

        self.uri = uri.rstrip("/")
        self.bucket, prefix = split_s3_uri(self.uri)
        if not self.bucket:
            raise ChurnOpsError(f"'{uri}': no bucket name")
        self.prefix = prefix.strip("/")

    @property
    def _s3(self) -> Any:
        from churnops.aws import client

        return client("s3")

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, err: Exception, key: str) -> ChurnOpsError:
        code, status = _error_code(err)
        where = f"{self.uri}/{key}" if key else self.uri
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFoundError(f"{where}: not found")
        if code == "PreconditionFailed" or status == 412:
            return PreconditionFailedError(f"{where}: changed since it was read")
        if code == "ConditionalRequestConflict" or status == 409:
            # S3 answers 409 when a concurrent conditional write on the same key is in flight.
            return PreconditionFailedError(f"{where}: a concurrent write is in progress")
        if code == "NoSuchBucket":
            return ChurnOpsError(f"s3://{self.bucket}: no such bucket")
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        return ChurnOpsError(f"{where}: {message}")

    def _call(self, key: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._s3, method)(**kwargs)
        except (ClientError, BotoCoreError) as err:
            raise self._fail(err, key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        response = self._call(key, "get_object", Bucket=self.bucket, Key=self._key(key))
        return response["Body"].read(), response["ETag"].strip('"')

    def put(self, key: str, data: bytes) -> str:
        response = self._call(key, "put_object", Bucket=self.bucket, Key=self._key(key), Body=data)
        return str(response["ETag"]).strip('"')

    def put_if_absent(self, key: str, data: bytes) -> str:
        try:
            response = self._call(
                key,
                "put_object",
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                IfNoneMatch="*",
            )
        except PreconditionFailedError:
            raise ObjectExistsError(
                f"s3://{self.bucket}/{self._key(key)}: already exists (write-once)"
            ) from None
        return str(response["ETag"]).strip('"')

    def replace_if_match(self, key: str, data: bytes, etag: str | None) -> str:
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": f'"{etag}"'}
        try:
            response = self._call(
                key, "put_object", Bucket=self.bucket, Key=self._key(key), Body=data, **condition
            )
        except ObjectNotFoundError:
            # IfMatch on a key that has gone away: the pointer changed under us all the same.
            raise PreconditionFailedError(
                f"s3://{self.bucket}/{self._key(key)}: changed since it was read"
            ) from None
        return str(response["ETag"]).strip('"')

    def etag(self, key: str) -> str | None:
        try:
            response = self._call(key, "head_object", Bucket=self.bucket, Key=self._key(key))
        except ObjectNotFoundError:
            return None
        return str(response["ETag"]).strip('"')

    def list(self, prefix: str = "") -> list[str]:
        full = (f"{self.prefix}/" if self.prefix else "") + prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
            if token:
                kwargs["ContinuationToken"] = token
            response = self._call(prefix, "list_objects_v2", **kwargs)
            keys.extend(obj["Key"][strip:] for obj in response.get("Contents", []))
            if not response.get("IsTruncated"):
                break
            token = response.get("NextContinuationToken")
        return sorted(k for k in keys if k.startswith(prefix))


def _error_code(err: Exception) -> tuple[str, int | None]:
    response = getattr(err, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status
