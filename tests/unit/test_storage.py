"""Storage backends: the same behaviour on a local directory and on S3 (moto)."""

from __future__ import annotations

import threading

import pytest

from churnops.errors import ChurnOpsError
from churnops.storage import (
    LocalStorage,
    ObjectExistsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    S3Storage,
    Storage,
    open_storage,
)


@pytest.fixture
def storage(store_uri: str) -> Storage:
    return open_storage(store_uri)


def test_put_get_roundtrip_and_etag(storage: Storage) -> None:
    tag = storage.put("a/b.json", b'{"x": 1}')
    data, read_tag = storage.get_with_etag("a/b.json")
    assert data == b'{"x": 1}'
    assert read_tag == tag == storage.etag("a/b.json")
    assert storage.exists("a/b.json")


def test_missing_key(storage: Storage) -> None:
    with pytest.raises(ObjectNotFoundError):
        storage.get("nope.json")
    assert storage.etag("nope.json") is None
    assert not storage.exists("nope.json")


def test_put_if_absent_is_write_once(storage: Storage) -> None:
    storage.put_if_absent("v/model.onnx", b"first")
    with pytest.raises(ObjectExistsError):
        storage.put_if_absent("v/model.onnx", b"second")
    assert storage.get("v/model.onnx") == b"first"


def test_replace_if_match_compare_and_swap(storage: Storage) -> None:
    # GIVEN no pointer: creating requires etag None
    first = storage.replace_if_match("champion.json", b"1", None)
    with pytest.raises(PreconditionFailedError):
        storage.replace_if_match("champion.json", b"again", None)
    # WHEN the right tag is given THEN the swap happens; a stale tag is refused
    second = storage.replace_if_match("champion.json", b"2", first)
    with pytest.raises(PreconditionFailedError):
        storage.replace_if_match("champion.json", b"3", first)
    assert storage.get("champion.json") == b"2"
    assert storage.etag("champion.json") == second


def test_replace_if_match_on_missing_key_fails(storage: Storage) -> None:
    with pytest.raises(PreconditionFailedError):
        storage.replace_if_match("gone.json", b"x", "0" * 32)


def test_list_is_sorted_and_scoped(storage: Storage) -> None:
    for key in ("versions/b/x.json", "versions/a/y.json", "history/1.json", "top.json"):
        storage.put(key, b"{}")
    assert storage.list("versions/") == ["versions/a/y.json", "versions/b/x.json"]
    assert storage.list() == [
        "history/1.json",
        "top.json",
        "versions/a/y.json",
        "versions/b/x.json",
    ]
    assert storage.list("missing/") == []


def test_racing_put_if_absent_has_one_winner(storage: Storage) -> None:
    winners: list[int] = []
    barrier = threading.Barrier(6)

    def write(i: int) -> None:
        barrier.wait()
        try:
            storage.put_if_absent("race.json", str(i).encode())
            winners.append(i)
        except ObjectExistsError:
            pass

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert storage.get("race.json") == str(winners[0]).encode()


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./x"])
def test_bad_keys_are_refused(tmp_path, key: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ChurnOpsError):
        LocalStorage(tmp_path).put(key, b"x")


def test_open_storage_picks_backend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert isinstance(open_storage("s3://bucket/prefix"), S3Storage)
    with pytest.raises(ChurnOpsError, match="unsupported"):
        open_storage("gs://bucket/x")


def test_local_root_that_is_a_file_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ChurnOpsError, match="not a directory"):
        LocalStorage(tmp_path / "file")


def test_missing_bucket_is_one_line_error(aws_env) -> None:  # type: ignore[no-untyped-def]
    store = open_storage("s3://no-such-bucket-churnops/models")
    with pytest.raises(ChurnOpsError, match="no such bucket"):
        store.get("champion.json")
