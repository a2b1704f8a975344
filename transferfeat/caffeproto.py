"""Caffe's wire formats, read and written without protobuf: Datum, BlobProto and NetParameter blobs.

Field numbers follow caffe.proto (BVLC Caffe 1.0). Writers emit fields in field-number order, as
protobuf's C++ serializer does, so files round-trip byte for byte.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from .errors import Error


class ProtoError(Error):
    """Bytes that are not the expected Caffe message."""


# --------------------------------------------------------------------------- wire primitives

def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint too long")


def fields(buf) -> Iterator[tuple[int, int, object]]:
    """Yield (field number, wire type, value): int for varints and fixed, memoryview for bytes."""
    buf = memoryview(buf)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            value, pos = _read_varint(buf, pos)
        elif wt == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise ProtoError(f"field {num}: length {size} runs past the end")
            value, pos = buf[pos:pos + size], pos + size
        elif wt == 5:
            if pos + 4 > end:
                raise ProtoError(f"field {num}: truncated 32-bit value")
            value, pos = bytes(buf[pos:pos + 4]), pos + 4
        elif wt == 1:
            if pos + 8 > end:
                raise ProtoError(f"field {num}: truncated 64-bit value")
            value, pos = bytes(buf[pos:pos + 8]), pos + 8
        else:
            raise ProtoError(f"field {num}: unsupported wire type {wt}")
        yield num, wt, value


def key(num: int, wt: int) -> bytes:
    return varint((num << 3) | wt)


def len_field(num: int, data: bytes) -> bytes:
    return key(num, 2) + varint(len(data)) + data


def int_field(num: int, value: int) -> bytes:
    return key(num, 0) + varint(int(value))


def _signed32(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _floats(value, dtype) -> np.ndarray:
    """Packed values (wire type 2) or one unpacked element (wire type 5 or 1): the same bytes."""
    if isinstance(value, int) or len(value) % np.dtype(dtype).itemsize:
        raise ProtoError(f"{len(value) if not isinstance(value, int) else 'a varint of'} bytes are no {dtype} values")
    return np.frombuffer(value, dtype=dtype)


def _want(wt: int, expected: int, num: int, message: str) -> None:
    if wt != expected:
        raise ProtoError(f"{message} field {num}: wire type {wt}, expected {expected}")


# --------------------------------------------------------------------------- Datum

@dataclass
class Datum:
    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    data: bytes = b""
    label: Optional[int] = None
    encoded: Optional[bool] = None
    float_data: Optional[np.ndarray] = None        # what extract_features writes

    def to_bytes(self) -> bytes:
        out = bytearray()
        for num, v in ((1, self.channels), (2, self.height), (3, self.width)):
            if v is not None:
                out += int_field(num, v)
        if self.data or self.encoded:
            out += len_field(4, self.data)
        if self.label is not None:
            out += int_field(5, self.label)
        if self.encoded is not None:
            out += int_field(7, int(self.encoded))
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf, copy: bool = True) -> "Datum":
        """The datum in ``buf``; with ``copy=False`` its data is a view into ``buf`` (which must outlive it)."""
        d = cls()
        for num, wt, value in fields(buf):
            if num in (1, 2, 3, 5, 7):
                _want(wt, 0, num, "Datum")
                if num == 5:
                    d.label = _signed32(value)
                elif num == 7:
                    d.encoded = bool(value)
                else:
                    setattr(d, ("channels", "height", "width")[num - 1], value)
            elif num == 4:
                _want(wt, 2, num, "Datum")
                d.data = bytes(value) if copy else value
            elif num == 6:
                part = _floats(value, "<f4")
                d.float_data = part if d.float_data is None else np.concatenate([d.float_data, part])
        return d

    def image(self) -> np.ndarray:
        """Pixels as a (channels, height, width) uint8 array (unencoded datums)."""
        if self.encoded:
            raise ProtoError("datum holds an encoded image; decode its data instead")
        dims = (self.channels or 0, self.height or 0, self.width or 0)
        if min(dims) <= 0 or len(self.data) != dims[0] * dims[1] * dims[2]:
            raise ProtoError(f"datum of {len(self.data)} bytes says it is {dims[0]}x{dims[1]}x{dims[2]}")
        return np.frombuffer(self.data, np.uint8).reshape(dims)


# --------------------------------------------------------------------------- BlobProto

@dataclass
class BlobProto:
    """A blob. ``num/channels/height/width`` are the 2014 header; ``shape`` the Caffe 1.0 one."""
    data: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    num: Optional[int] = None
    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    shape: Optional[tuple[int, ...]] = None
    diff: Optional[np.ndarray] = None

    @property
    def dims(self) -> tuple[int, ...]:
        if self.shape is not None:
            return tuple(self.shape)
        return tuple(v or 0 for v in (self.num, self.channels, self.height, self.width))

    def array(self) -> np.ndarray:
        dims = self.dims
        if int(np.prod(dims)) != self.data.size:
            raise ProtoError(f"blob of shape {dims} holds {self.data.size} values")
        return self.data.reshape(dims)

    def to_bytes(self) -> bytes:
        out = bytearray()
        for num, v in ((1, self.num), (2, self.channels), (3, self.height), (4, self.width)):
            if v is not None:
                out += int_field(num, v)
        if self.data.size:
            out += len_field(5, np.ascontiguousarray(self.data, "<f4").tobytes())
        if self.diff is not None and self.diff.size:
            out += len_field(6, np.ascontiguousarray(self.diff, "<f4").tobytes())
        if self.shape is not None:
            out += len_field(7, len_field(1, b"".join(varint(d) for d in self.shape)))
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf) -> "BlobProto":
        b = cls()
        data, diff = [], []
        for num, wt, value in fields(buf):
            if num in (1, 2, 3, 4):
                _want(wt, 0, num, "BlobProto")
                setattr(b, ("num", "channels", "height", "width")[num - 1], _signed32(value))
            elif num == 5:
                data.append(_floats(value, "<f4"))
            elif num == 6:
                diff.append(_floats(value, "<f4"))
            elif num == 8:
                data.append(_floats(value, "<f8").astype(np.float32))
            elif num == 7:
                _want(wt, 2, num, "BlobProto")
                dims = []
                for n2, wt2, v2 in fields(value):
                    if n2 == 1 and wt2 == 2:
                        p = 0
                        while p < len(v2):
                            d, p = _read_varint(v2, p)
                            dims.append(d)
                    elif n2 == 1 and wt2 == 0:
                        dims.append(v2)
                b.shape = tuple(dims)
        b.data = np.concatenate(data) if data else np.zeros(0, np.float32)
        b.diff = np.concatenate(diff) if diff else None
        return b


def read_blob(path) -> BlobProto:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return BlobProto.from_bytes(data)
    except ProtoError as e:
        raise ProtoError(f"{path}: not a BlobProto ({e})") from None


def mean_blob(mean: np.ndarray) -> BlobProto:
    """A mean image (channels, height, width) laid out as compute_image_mean writes it."""
    c, h, w = mean.shape
    return BlobProto(data=mean.astype(np.float32).ravel(), num=1, channels=c, height=h, width=w)


# --------------------------------------------------------------------------- NetParameter (.caffemodel)

@dataclass
class LayerBlobs:
    name: str
    type: str
    blobs: list[BlobProto]


_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 5: "Data", 6: "Dropout", 15: "LRN", 17: "Pooling",
             18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 1: "Accuracy", 12: "ImageData"}


def _layer(buf, name_f: int, type_f: int, blobs_f: int, enum: dict = None, v0_f: int = None) -> LayerBlobs:
    """One layer message, given the field numbers of its name, type and blobs (``enum``: a numeric
    type; ``v0_f``: the field of a V0 layer nested inside, as 2014 files have)."""
    layer = LayerBlobs("", "", [])
    for num, wt, value in fields(buf):
        if num == name_f:
            _want(wt, 2, num, "layer")
            layer.name = bytes(value).decode(errors="replace")
        elif num == type_f:
            _want(wt, 0 if enum else 2, num, "layer")
            layer.type = enum.get(value, str(value)) if enum else bytes(value).decode(errors="replace")
        elif num == blobs_f:
            _want(wt, 2, num, "layer")
            layer.blobs.append(BlobProto.from_bytes(value))
        elif num == v0_f and wt == 2:
            inner = _layer(value, 1, 2, 50)
            layer.name, layer.type = inner.name or layer.name, inner.type or layer.type
            layer.blobs += inner.blobs
    return layer


def read_net(path) -> list[LayerBlobs]:
    """Layer names, types and blobs of a NetParameter file (Caffe 1.0 ``layer``, V1 ``layers``, V0)."""
    with open(path, "rb") as f:
        buf = f.read()
    try:
        return [_layer(value, 1, 2, 7) if num == 100 else _layer(value, 4, 5, 6, _V1_TYPES, v0_f=1)
                for num, wt, value in fields(buf) if wt == 2 and num in (100, 2)]
    except ProtoError as e:
        raise ProtoError(f"{path}: not a NetParameter ({e})") from None


def net_weights(path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its blobs as arrays, for layers that have any."""
    return {l.name: [b.array() for b in l.blobs] for l in read_net(path) if l.blobs}


def net_bytes(name: str, layers) -> bytes:
    """A NetParameter (.caffemodel) holding ``layers``: (name, type, [arrays]) in net order, each blob
    with its Caffe 1.0 ``shape``, as Net::ToProto writes them (without the layers' other settings)."""
    out = bytearray(len_field(1, name.encode()))
    for lname, ltype, blobs in layers:
        body = len_field(1, lname.encode()) + len_field(2, ltype.encode())
        for b in blobs:
            a = np.asarray(b, np.float32)
            body += len_field(7, BlobProto(data=a.ravel(), shape=a.shape).to_bytes())
        out += len_field(100, body)
    return bytes(out)


@dataclass
class SolverState:
    iter: int = 0
    learned_net: str = ""
    history: list = field(default_factory=list)       # BlobProto per learnable blob, in net order
    current_step: int = 0

    def to_bytes(self) -> bytes:
        out = bytearray(int_field(1, self.iter) + len_field(2, self.learned_net.encode()))
        for h in self.history:
            out += len_field(3, h.to_bytes())
        if self.current_step:
            out += int_field(4, self.current_step)
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf) -> "SolverState":
        s = cls()
        for num, wt, value in fields(buf):
            if num == 1 and wt == 0:
                s.iter = _signed32(value)
            elif num == 2 and wt == 2:
                s.learned_net = bytes(value).decode(errors="replace")
            elif num == 3 and wt == 2:
                s.history.append(BlobProto.from_bytes(value))
            elif num == 4 and wt == 0:
                s.current_step = _signed32(value)
        return s
