"""S3: answer a ranged GET by reading only the range.

S3 serves a byte range without reading the rest of the object; moto 5.2.5 reads the whole object
(`FakeKey.value`) for every ranged GET, then slices it. The ingest job reads a file in byte-range
splits, so a 1.4 GB upload in 48 splits would be read, and held, 48 times in the twin's memory.
While a GET with a Range header is being answered, the object's value is a view that reads only
the bytes that are sliced out of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_ranged_get = threading.local()


class _ObjectBytes:
    """The stored bytes of one object, read from moto's buffer only where sliced."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __getitem__(self, index: slice) -> bytes:
        start, stop, step = index.indices(len(self))
        if step != 1:
            return self.whole()[index]
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return bytes(self.key._value_buffer.read(max(0, stop - start)))

    def whole(self) -> bytes:
        with self.key.lock:
            self.key._value_buffer.seek(0)
            return bytes(self.key._value_buffer.read())


class _RangeAwareValue(property):
    """FakeKey.value, answering a view instead of the bytes while a ranged GET is answered."""

    __wrapped__: Any = None


def _patched_key_value(original: property) -> property:
    def value(self: Any) -> Any:
        if getattr(_ranged_get, "active", False):
            return _ObjectBytes(self)
        return original.fget(self) if original.fget else None

    patched = _RangeAwareValue(value, original.fset, original.fdel, original.__doc__)
    patched.__wrapped__ = original
    return patched


def _patched_get_object(original: Any) -> Any:
    def get_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        _ranged_get.active = bool(self.headers.get("range"))
        try:
            status, headers, body = original(self, *args, **kwargs)
        finally:
            _ranged_get.active = False
        if isinstance(body, _ObjectBytes) and status != 200:  # a part-number GET: whole
            body = body.whole()
        return status, headers, body

    get_object.__wrapped__ = original  # type: ignore[attr-defined]
    return get_object


def _patched_handle_range_header(original: Any) -> Any:
    def handle_range_header(self: Any, *args: Any, **kwargs: Any) -> Any:
        status, headers, body = original(self, *args, **kwargs)
        if isinstance(body, _ObjectBytes):  # a range S3 answers with the whole object
            body = body.whole()
        return status, headers, body

    handle_range_header.__wrapped__ = original  # type: ignore[attr-defined]
    return handle_range_header


def patches() -> list[tuple[Any, str, Callable[[Any], Any]]]:
    """(owner, attribute, replacement builder) for every S3 attribute this module replaces."""
    from moto.s3.models import FakeKey
    from moto.s3.responses import S3Response

    return [
        (FakeKey, "value", _patched_key_value),
        (S3Response, "get_object", _patched_get_object),
        (S3Response, "_handle_range_header", _patched_handle_range_header),
    ]
