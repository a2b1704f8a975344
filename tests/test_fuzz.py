"""Whatever bytes come in, the log parser, the list reader, the prototxt reader and the study loader
give a result or the project's own error type, never anything else (bounded examples: seconds)."""
import random

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from transferfeat.errors import Error
from transferfeat.logs import parse_files
from transferfeat.prototxt import parse
from transferfeat.splits import read_list
from transferfeat.study import Study

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

LOG_LINES = [
    b"I1127 10:00:00.000000  1234 solver.cpp:330] Iteration 0, Testing net (#0)",
    b"I1127 10:00:01.000000  1234 solver.cpp:397]     Test net output #0: accuracy = 0.05",
    b"I1127 10:00:01.000000  1234 solver.cpp:397]     Test net output #1: loss = 2.99 (* 1 = 2.99 loss)",
    b"I1127 10:00:02.000000  1234 solver.cpp:218] Iteration 20 (9.5 iter/s, 2.1s/20 iters), loss = 2.9",
    b"I1127 10:00:02.000000  1234 sgd_solver.cpp:105] Iteration 20, lr = 0.01",
    b"I0403 06:39:10.123456  4321 solver.cpp:106] Iteration 1000, Testing net",
    b"I0403 06:39:10.123456  4321 solver.cpp:141] Test score #0: 0.001",
    b"I0403 06:39:10.123456  4321 solver.cpp:141] Test score #1: 6.9",
]
# Mutations: glog stamps that are no date, numbers that are not numbers, bytes that are not UTF-8.
NOISE = [b"I9999 99:99:99", b"I0230 25:61:61.0", b"nan", b"-1e999", b"\xff\xfe\x80", b"accuracy = ", b"#",
         b", loss = ", b", lr = ", b"Iteration ", b"Testing net", b"(", b")", b"\n", b"Test net output #7: \xc3\x28 = 1"]


def mutated(lines, noise):
    return st.lists(st.one_of(st.sampled_from(lines), st.sampled_from(noise), st.binary(max_size=40)),
                    max_size=40).map(b"\n".join)


@FUZZ
@given(data=mutated(LOG_LINES, NOISE), gz=st.booleans(), cut=st.integers(0, 30))
@example(data=b"I9999 99:99:99.000000 1 solver.cpp:1] x\n", gz=False, cut=0)        # a stamp that is no date
@example(data=LOG_LINES[0] + b"\nI1127 10:00:01.0 1 s.cpp:1]  Test net output #0: \xc3\x28 = 0.5\n", gz=False, cut=0)
def test_log_parser(tmp_path, data, gz, cut):
    import gzip
    path = tmp_path / ("x.o1.gz" if gz else "tf-train-x.log")
    raw = gzip.compress(data) if gz else data
    path.write_bytes(raw[: max(0, len(raw) - cut)])
    try:
        log = parse_files([path])
        assert log.iterations >= 0
        list(log.accuracy.values())
    except Error:
        pass


@FUZZ
@given(data=st.lists(st.one_of(st.just(b"n01440764/a.JPEG 3"), st.just(b"b.JPEG 999"), st.just(b"c.JPEG x"),
                               st.just(b"  "), st.just(b"\xff\xfe.JPEG 1"), st.just(b"a b c"),
                               st.binary(max_size=20)), max_size=20).map(b"\n".join))
def test_list_reader(tmp_path, data):
    path = tmp_path / "files.txt"
    path.write_bytes(data)
    try:
        for e in read_list(path, 10):
            assert 0 <= e.label < 10
    except Error as e:
        assert str(path) in str(e)


PROTOTXT = ['name: "x"', "layer {", "}", 'type: "Convolution"', "num_output: 96", 'top: "a\\x"', 'name: "\\777"',
            "convolution_param {", "kernel_size: 3", ":", "{", '"', "# comment", "param { lr_mult: 0 }", "x: y: z"]


@FUZZ
@given(data=st.lists(st.one_of(st.sampled_from(PROTOTXT), st.text(max_size=15)), max_size=30).map("\n".join))
def test_prototxt_reader(data):
    try:
        parse(data, "net.prototxt")
    except Error as e:
        assert "net.prototxt" in str(e)


def _paths(node, prefix=()):
    """Every (path, value) in a nested YAML document."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


MINI = yaml.safe_load(Study.load("mini").path.read_text())
PLACES = [p for p, _ in _paths(MINI) if p]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3000), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=8), st.lists(st.integers(-2, 30), max_size=4),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(PLACES), VALUES, st.booleans()), min_size=1, max_size=4))
def test_study_loader_on_mutated_studies(tmp_path, changes):
    import copy
    doc = copy.deepcopy(MINI)
    for place, value, delete in changes:
        node = doc
        try:
            for k in place[:-1]:
                node = node[k]
            if delete and isinstance(node, dict):
                node.pop(place[-1], None)
            else:
                node[place[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        study = Study.load(path)
        assert study.nets
    except Error as e:
        assert "study.yaml" in str(e)


@FUZZ
@given(data=st.binary(max_size=300))
def test_study_loader_on_bytes(tmp_path, data):
    text = Study.load("mini").path.read_bytes()
    cut = random.Random(len(data)).randrange(len(text))
    path = tmp_path / "study.yaml"
    path.write_bytes(text[:cut] + data + text[cut:])
    try:
        Study.load(path)
    except Error as e:
        assert "study.yaml" in str(e)


@pytest.mark.parametrize("text,expect", [
    (b"name: x\n\xff\xfe\n", "not UTF-8"),
    (b"- a\n- b\n", "expected a mapping"),
])
def test_study_loader_messages(tmp_path, text, expect):
    path = tmp_path / "study.yaml"
    path.write_bytes(text)
    with pytest.raises(Error, match=expect):
        Study.load(path)


# ---------------------------------------------------------------- the torch engine's readers

def _datum():
    from transferfeat.caffeproto import Datum
    return Datum(3, 4, 5, bytes(range(60)), 7, False).to_bytes()


@FUZZ
@given(cut=st.integers(0, 80), flip=st.lists(st.tuples(st.integers(0, 79), st.integers(0, 255)), max_size=4),
       tail=st.binary(max_size=12))
@example(cut=0, flip=[(1, 9)], tail=b"")                  # channels 9: the bytes no longer fit the shape
@example(cut=0, flip=[], tail=b"\x38\x01\x22\x02\xff\xd8")     # encoded, then bytes no decoder reads
def test_datum_records(cut, flip, tail):
    """A record as the torch engine's Data layer reads it: pixels and a label, or the project's error."""
    from transferfeat.engines.torchnet.feed import record
    data = bytearray(_datum()[: len(_datum()) - cut])
    for at, v in flip:
        if at < len(data):
            data[at] = v
    try:
        label, img = record(bytes(data) + tail)
        assert img.ndim == 3 and isinstance(label, int)
    except Error:
        pass


@pytest.fixture(scope="module")
def rendered_net(tmp_path_factory):
    from transferfeat.render import Renderer
    study = Study.load("mini")
    tmp = tmp_path_factory.mktemp("fuzznet")
    return Renderer(study).render(study.net("half0A"), tmp / "results", data_root=tmp / "data")


@FUZZ
@given(ops=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["drop", "dup", "junk"]),
                              st.sampled_from(PROTOTXT + ["pad_h: 1", "stride: -1", "pool: STOCHASTIC", "type: 7",
                                                          'bottom: "nowhere"', "crop_size: 99", "}"])), max_size=6))
def test_net_reader(rendered_net, tmp_path_factory, ops):
    """A rendered train prototxt, its lines dropped, doubled or joined by others: the engine's reader
    gives a net or one error naming the file."""
    from transferfeat.netspec import read
    lines = (rendered_net / "imagenet_train.prototxt").read_text().splitlines()
    for at, op, junk in ops:
        at %= len(lines)
        if op == "drop":
            del lines[at]
        elif op == "dup":
            lines.insert(at, lines[at])
        else:
            lines.insert(at, junk)
        if not lines:
            break
    path = tmp_path_factory.mktemp("n") / "imagenet_train.prototxt"
    path.write_text("\n".join(lines))
    try:
        read(path, data_shape=(3, 32, 32))
    except Error as e:
        assert str(path) in str(e)


@FUZZ
@given(cut=st.integers(0, 300), flip=st.lists(st.tuples(st.integers(0, 299), st.integers(0, 255)), max_size=4))
def test_solverstate_reader(tmp_path_factory, cut, flip):
    """A solver state cut or garbled: read back by the snapshot check as a state or one error."""
    import numpy as np
    from transferfeat.caffeproto import BlobProto, SolverState
    from transferfeat.snapshots import read_solverstate
    state = SolverState(40, "caffe_imagenet_train_iter_40.caffemodel",
                        [BlobProto(data=np.arange(12, dtype=np.float32), shape=(3, 4)),
                         BlobProto(data=np.ones(3, np.float32), shape=(3,))], 1).to_bytes()
    data = bytearray(state[: max(0, len(state) - cut)])
    for at, v in flip:
        if at < len(data):
            data[at] = v
    path = tmp_path_factory.mktemp("s") / "x.solverstate"
    path.write_bytes(bytes(data))
    try:
        s = read_solverstate(path)
        assert isinstance(s.iter, int) and all(isinstance(h, BlobProto) for h in s.history)
    except Error as e:
        assert str(path) in str(e)
