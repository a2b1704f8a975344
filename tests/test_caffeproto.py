import numpy as np
import pytest

from transferfeat.caffeproto import BlobProto, Datum, ProtoError, fields, mean_blob, read_blob, varint


def test_reference_mean_round_trips_byte_for_byte(shared, tmp_path):
    path = shared / "results" / "half0B" / "imagenet_mean.binaryproto"
    blob = read_blob(path)
    assert blob.dims == (1, 3, 256, 256) and blob.shape is None
    means = blob.array()[0].reshape(3, -1).mean(axis=1)
    assert np.allclose(means, [104.219, 116.559, 122.342], atol=1e-3)     # BGR, as Caffe stores them
    assert blob.to_bytes() == path.read_bytes()
    assert mean_blob(blob.array()[0]).to_bytes() == path.read_bytes()


def test_datum_round_trip_and_field_order():
    d = Datum(3, 2, 2, bytes(range(12)), 7, False)
    raw = d.to_bytes()
    assert [n for n, _, _ in fields(raw)] == [1, 2, 3, 4, 5, 7]
    back = Datum.from_bytes(raw)
    assert back == d and back.image().shape == (3, 2, 2)
    enc = Datum(data=b"\xff\xd8jpeg", label=3, encoded=True).to_bytes()
    assert [n for n, _, _ in fields(enc)] == [4, 5, 7]
    with pytest.raises(ProtoError):
        Datum.from_bytes(enc).image()


def test_blob_with_caffe1_shape_round_trips():
    b = BlobProto(data=np.arange(24, dtype=np.float32), shape=(2, 3, 4))
    back = BlobProto.from_bytes(b.to_bytes())
    assert back.shape == (2, 3, 4) and np.array_equal(back.array(), np.arange(24).reshape(2, 3, 4))
    assert back.to_bytes() == b.to_bytes()


def test_negative_and_large_varints():
    assert varint(300) == b"\xac\x02"
    assert len(varint(-1)) == 10


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x08", b"\x0f"])
def test_corrupt_bytes_are_reported(tmp_path, data):
    p = tmp_path / "bad.binaryproto"
    p.write_bytes(data)
    with pytest.raises(ProtoError, match="bad.binaryproto"):
        read_blob(p)


def test_read_net_all_three_layer_formats(tmp_path):
    from transferfeat.caffeproto import int_field, len_field, read_net
    blob = BlobProto(data=np.ones(6, np.float32), shape=(2, 3)).to_bytes()
    v0 = len_field(1, len_field(1, b"conv1") + len_field(2, b"conv") + len_field(50, blob))   # 2014: V0 in V1
    v1 = len_field(4, b"fc8") + int_field(5, 14) + len_field(6, blob) + len_field(6, blob)
    caffe1 = len_field(1, b"relu1") + len_field(2, b"ReLU")
    path = tmp_path / "net.caffemodel"
    path.write_bytes(len_field(1, b"CaffeNet") + len_field(2, v0) + len_field(2, v1) + len_field(100, caffe1))
    layers = read_net(path)
    assert [(l.name, l.type, len(l.blobs)) for l in layers] == [
        ("conv1", "conv", 1), ("fc8", "InnerProduct", 2), ("relu1", "ReLU", 0)]
    assert layers[1].blobs[0].dims == (2, 3)
