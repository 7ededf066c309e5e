"""Typed JSON encoding: msgspec for Structs, dataclasses and plain types; pydantic for its models.

Encoding validates: the encoded bytes are decoded back with the channel's type, so what a producer
writes is exactly what a consumer can read.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import msgspec

__all__ = ["Codec", "codec_for"]

T = TypeVar("T")


class Codec(Protocol[T]):
    def encode(self, obj: T) -> bytes: ...

    def decode(self, data: bytes) -> T: ...


class MsgspecCodec(Generic[T]):
    def __init__(self, type_: Any) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(type_)

    def encode(self, obj: T) -> bytes:
        data = self._encoder.encode(obj)
        self._decoder.decode(data)
        return data

    def decode(self, data: bytes) -> T:
        return self._decoder.decode(data)


class PydanticCodec(Generic[T]):
    def __init__(self, type_: Any) -> None:
        import pydantic

        self._type = type_
        self._adapter: pydantic.TypeAdapter[T] = pydantic.TypeAdapter(type_)

    def encode(self, obj: T) -> bytes:
        # A model instance is not revalidated by pydantic (model_construct skips checks), so
        # round-trip it through JSON like every other message.
        if not isinstance(obj, self._type):
            obj = self._adapter.validate_python(obj)
        data = self._adapter.dump_json(obj, warnings=False)
        self._adapter.validate_json(data)
        return data

    def decode(self, data: bytes) -> T:
        return self._adapter.validate_json(data)


def _is_pydantic_model(type_: Any) -> bool:
    try:
        import pydantic
    except ImportError:  # pragma: no cover - pydantic is optional for library users
        return False
    return isinstance(type_, type) and issubclass(type_, pydantic.BaseModel)


def codec_for(type_: Any) -> Codec[Any]:
    if _is_pydantic_model(type_):
        return PydanticCodec(type_)
    return MsgspecCodec(type_)


DECODE_ERRORS: tuple[type[Exception], ...] = (msgspec.DecodeError, ValueError, TypeError)
ENCODE_ERRORS: tuple[type[Exception], ...] = (
    msgspec.EncodeError,
    msgspec.ValidationError,
    ValueError,
    TypeError,
)
