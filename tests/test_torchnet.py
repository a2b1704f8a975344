"""The torch engine's own rules, where torch is and Caffe need not be: Caffe's pooling sizes,
accuracy ties, fillers, the SGD update, the training loop that `solve` and the step checks share,
the DataTransformer, and a data feed that fails with one line instead of hanging. (Checked against
real Caffe in test_torch.py.)"""
import math
import time

import numpy as np
import pytest

from conftest import edit_prototxt, rendered, run_trainer, set_fields
from transferfeat.caffeproto import Datum
from transferfeat.errors import Error
from transferfeat.layers import pool_out
from transferfeat.netspec import read

pytestmark = pytest.mark.torch


@pytest.fixture
def d(tiny_data, tmp_path, torch_engine):
    """half0A of the tiny study, rendered: its folder."""
    study, data = tiny_data
    return rendered(study, data, tmp_path / "results").net("half0A").path


def layer(msg, name):
    return next(l for l in msg["layer"] if l.one("name") == name)


def deterministic(d):
    """No dropout, no mirror, the whole image (no random crop): training is a function of the data."""
    def train(msg):
        msg["layer"] = [l for l in msg["layer"] if l.one("type") != "Dropout"]
        msg["layer"][0].one("transform_param").update(crop_size=[32], mirror=[False])
    edit_prototxt(d / "imagenet_train.prototxt", train)
    edit_prototxt(d / "imagenet_val.prototxt", lambda msg: msg["layer"][0].one("transform_param").update(crop_size=[32]))
    return d


def one_layer(kind, block, **fields):
    """A netspec Layer of ``kind`` with ``fields`` in its block (for the forward functions alone)."""
    from transferfeat.layers import TABLE
    from transferfeat.netspec import Layer
    from transferfeat.prototxt import Message
    msg = Message({block: [Message({k: [v] for k, v in fields.items()})]}) if block else Message()
    return Layer("x", kind, ["in"], ["out"], msg, 1, TABLE[kind])


def test_pooling_follows_caffes_size_rule_and_window():
    import torch
    from transferfeat.engines.torchnet.model import FORWARD
    from transferfeat.prototxt import Word
    assert [pool_out(s, 3, 0, 2) for s in (13, 14, 27)] == [6, 7, 13]          # ceil, not floor
    assert pool_out(5, 2, 1, 2) == 3 and pool_out(6, 3, 2, 3) == 3 and pool_out(4, 3, 1, 2) == 3   # clipped, clipped, not
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5)
    mx = FORWARD["Pooling"](None, one_layer("Pooling", "pooling_param", pool=Word("MAX"), kernel_size=2, stride=2), [x])
    assert mx.shape == (1, 1, 3, 3) and mx[0, 0, 2, 2] == 25 and mx[0, 0, 0, 2] == 10     # a 1-pixel last window
    ave = FORWARD["Pooling"](None, one_layer("Pooling", "pooling_param", pool=Word("AVE"), kernel_size=3, stride=2,
                                             pad=1), [x])
    # Caffe divides by the window clipped to the padded image: the corner's 2x2 real pixels over 9 - 5 padded ones
    assert ave.shape == (1, 1, 3, 3)
    assert float(ave[0, 0, 0, 0]) == pytest.approx((1 + 2 + 6 + 7) / 9)
    assert float(ave[0, 0, 1, 1]) == pytest.approx(sum([7, 8, 9, 12, 13, 14, 17, 18, 19]) / 9)


def test_accuracy_counts_ties_against_and_honours_top_k():
    import torch
    from transferfeat.engines.torchnet.model import FORWARD
    scores = torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    acc = lambda k: float(FORWARD["Accuracy"](None, one_layer("Accuracy", "accuracy_param", top_k=k), [scores, labels]))  # noqa: E731
    assert acc(1) == pytest.approx(1 / 3)          # row 0 ties with class 1: wrong; row 2's label is second
    assert acc(2) == pytest.approx(1.0)


def test_fillers_are_caffes(torch_engine):
    import torch
    from transferfeat.engines.torchnet.model import fill
    from transferfeat.prototxt import Message
    gen = torch.Generator().manual_seed(0)

    def conv(**filler):
        f = Message({k: [v] for k, v in filler.items()})
        return one_layer("Convolution", "convolution_param", num_output=64, kernel_size=3, weight_filler=f)
    g = fill(conv(type="gaussian", std=0.01, mean=0.5), 0, (64, 16, 3, 3), gen)
    assert abs(float(g.mean()) - 0.5) < 0.002 and abs(float(g.std()) - 0.01) < 0.001
    x = fill(conv(type="xavier"), 0, (64, 16, 3, 3), gen)
    assert float(x.abs().max()) <= math.sqrt(3 / (16 * 9)) and float(x.abs().max()) > 0.9 * math.sqrt(3 / (16 * 9))
    u = fill(conv(type="uniform", min=-2.0, max=-1.0), 0, (1000,), gen)
    assert float(u.min()) >= -2 and float(u.max()) <= -1
    assert float(fill(conv(type="constant", value=0.25), 0, (4,), gen).sum()) == 1.0
    assert float(fill(conv(type="gaussian"), 1, (4,), gen).abs().sum()) == 0.0     # no bias_filler: constant 0


def test_batch_norm_keeps_caffes_running_sums(torch_engine):
    """Batch statistics (biased variance) normalise at TRAIN and update the sums as Caffe does;
    TEST divides the sums by the factor; use_global_stats overrides the phase."""
    import torch
    from types import SimpleNamespace
    from transferfeat.engines.torchnet.model import FORWARD
    bn = FORWARD["BatchNorm"]
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 3 + 2
    blobs = [torch.zeros(3), torch.zeros(3), torch.zeros(1)]
    layer = one_layer("BatchNorm", "batch_norm_param", moving_average_fraction=0.9)
    model = SimpleNamespace(params={"x": blobs}, phase="TRAIN")
    y = bn(model, layer, [x])
    xn = x.numpy().transpose(1, 0, 2, 3).reshape(3, -1)
    mean, var, m = xn.mean(1), xn.var(1), xn.shape[1]
    assert np.allclose(y.numpy().transpose(1, 0, 2, 3).reshape(3, -1), (xn - mean[:, None]) / np.sqrt(var[:, None] + 1e-5),
                       atol=1e-5)
    assert float(blobs[2]) == 1 and np.allclose(blobs[0], mean) and np.allclose(blobs[1], var * m / (m - 1))
    bn(model, layer, [x])
    assert float(blobs[2]) == pytest.approx(1.9) and np.allclose(blobs[0], 1.9 * mean, rtol=1e-5)
    model.phase = "TEST"
    before = [b.clone() for b in blobs]
    y = bn(model, layer, [x])
    assert all(torch.equal(a, b) for a, b in zip(before, blobs))                # stored statistics: no update
    ref = (xn - mean[:, None]) / np.sqrt(var[:, None] * m / (m - 1) + 1e-5)
    assert np.allclose(y.numpy().transpose(1, 0, 2, 3).reshape(3, -1), ref, atol=1e-4)
    model.phase = "TRAIN"
    frozen = one_layer("BatchNorm", "batch_norm_param", use_global_stats=True)
    assert torch.allclose(bn(model, frozen, [x]), y) and all(torch.equal(a, b) for a, b in zip(before, blobs))
    blobs[2].zero_()
    assert torch.equal(bn(model, frozen, [x]), x / math.sqrt(1e-5))               # a zero factor: zero statistics


def test_scale_and_eltwise_are_caffes(torch_engine):
    import torch
    from types import SimpleNamespace
    from transferfeat.engines.torchnet.model import FORWARD, fill
    from transferfeat.prototxt import Message, Word
    gen = torch.Generator().manual_seed(0)
    scale = one_layer("Scale", "scale_param", bias_term=True)
    assert float(fill(scale, 0, (4,), gen).sum()) == 4 and float(fill(scale, 1, (4,), gen).abs().sum()) == 0
    given = one_layer("Scale", "scale_param", filler=Message({"type": ["constant"]}))
    assert float(fill(given, 0, (4,), gen).abs().sum()) == 0                   # a filler without value: 0
    x = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)
    model = SimpleNamespace(params={"x": [torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])]})
    assert FORWARD["Scale"](model, scale, [x]).flatten().tolist() == [0.5, 2.5, 4.5, 6.5, -3, -4, -5, -6]
    a = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = torch.tensor([1.0, 5.0, 0.0], requires_grad=True)
    c = torch.tensor([1.0, 5.0, 4.0], requires_grad=True)
    weighted = one_layer("Eltwise", "eltwise_param")
    weighted.msg.one("eltwise_param")["coeff"] = [0.5, -2.0]
    assert FORWARD["Eltwise"](None, weighted, [a, b]).tolist() == [-1.5, -9.0, 1.5]
    assert FORWARD["Eltwise"](None, one_layer("Eltwise", None), [a, b]).tolist() == [2.0, 7.0, 3.0]
    m = FORWARD["Eltwise"](None, one_layer("Eltwise", "eltwise_param", operation=Word("MAX")), [a, b, c])
    assert m.tolist() == [1.0, 5.0, 4.0]
    m.sum().backward()
    assert (a.grad.tolist(), b.grad.tolist(), c.grad.tolist()) == ([0, 0, 0], [1, 1, 0], [0, 0, 1])   # ties: later, then strictly greater
    p = FORWARD["Eltwise"](None, one_layer("Eltwise", "eltwise_param", operation=Word("PROD")), [a, b, c])
    assert p.tolist() == [1.0, 50.0, 0.0]


def test_sgd_update_is_caffes(d):
    """h = momentum·h + rate·lr_mult·(∇ + decay·decay_mult·w); w -= h; an lr_mult 0 blob never moves."""
    import torch
    from transferfeat.engines.torchnet.glog import Quiet
    from transferfeat.engines.torchnet.solver import Solver

    def frozen(msg):
        for p in layer(msg, "conv1")["param"]:
            p.update(lr_mult=[0], decay_mult=[0])
    edit_prototxt(d / "imagenet_train.prototxt", frozen)
    s = Solver(d / "imagenet_solver.prototxt", log=Quiet())
    blobs = list(s.net.learnable())
    before = [t.detach().clone() for _, _, t, _, _ in blobs]
    torch.manual_seed(1)
    for (layer_, i, t, lr_mult, decay_mult), h in zip(blobs, s.history):
        h.normal_()
        if lr_mult:
            t.grad = torch.randn_like(t)
    grads = [None if t.grad is None else t.grad.clone() for _, _, t, _, _ in blobs]
    hist = [h.clone() for h in s.history]
    s.apply_update(0.01)
    for (name, i, t, lr_mult, decay_mult), w0, g, h0, h in zip(blobs, before, grads, hist, s.history):
        if lr_mult == 0:
            assert name.name == "conv1" and torch.equal(t, w0)
            continue
        want_h = 0.9 * h0 + 0.01 * lr_mult * (g + 0.0005 * decay_mult * w0)
        assert torch.allclose(h, want_h, rtol=1e-6, atol=1e-7) and torch.allclose(t, w0 - want_h, rtol=1e-6, atol=1e-6)


def test_solve_runs_the_same_step_the_checks_drive(d):
    """Production's loop (solve) and the step-by-step checks' (step) are one: the same weights bit for bit."""
    import torch
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    from transferfeat.engines.torchnet.solver import Solver
    deterministic(d)
    set_fields(d / "imagenet_solver.prototxt", max_iter=4, snapshot=0, test_interval=0, snapshot_after_train=False)
    a = Solver(d / "imagenet_solver.prototxt", log=Quiet())
    a.solve()
    b = Solver(d / "imagenet_solver.prototxt", log=Quiet())
    feed = Feed(b.train_spec, "TRAIN", b.seed, Quiet())
    for _ in range(4):
        b.step(feed.next())
    assert a.iter == b.iter == 4
    for name, blobs in a.net.params.items():
        assert all(torch.equal(x, y) for x, y in zip(blobs, b.net.params[name])), name


def test_the_transformer_crops_mirrors_and_subtracts_the_mean(d):
    from transferfeat.databases import iter_db
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    spec = read(d / "imagenet_val.prototxt", "TEST")
    feed = Feed(spec, "TEST", 0, Quiet())
    data, labels = feed.next()
    first = [Datum.from_bytes(v) for _, v in list(iter_db(d / "imagenet_val_lmdb"))[:50]]
    img = first[0].image().astype(np.float32)
    mean = feed.mean
    want = (img - mean)[:, 2:30, 2:30]                                # TEST: the centred 28x28 crop
    assert np.array_equal(data[0].numpy(), want) and labels.tolist() == [x.label for x in first]
    train = Feed(read(d / "imagenet_train.prototxt"), "TRAIN", 3, Quiet())
    rng = np.random.RandomState(3)
    batch, _ = train.next()
    records = [Datum.from_bytes(v).image().astype(np.float32) for _, v in list(iter_db(d / "imagenet_train_lmdb"))[:2]]
    for k, rec in enumerate(records):                                 # Caffe's order: mirror, then the offsets
        mirror, h, w = rng.randint(2), rng.randint(5), rng.randint(5)
        out = (rec - mean)[:, h:h + 28, w:w + 28]
        assert np.array_equal(batch[k].numpy(), out[:, :, ::-1] if mirror else out)


def test_a_cut_record_ends_the_trainer_with_one_line(d):
    """A Datum cut short in the training database: the trainer stops within seconds, its error names
    the database and the key, and no Python traceback reaches the log."""
    import lmdb
    from transferfeat.databases import iter_db
    copy = d.parent / "cut_lmdb"
    out = lmdb.open(str(copy), map_size=1 << 26)
    with out.begin(write=True) as dst:
        for i, (k, v) in enumerate(iter_db(d / "imagenet_train_lmdb")):
            dst.put(k, v[: len(v) // 2] if i == 40 else v)
            if i == 40:
                key = k.decode()
    out.close()
    (d / "imagenet_train_lmdb").unlink()
    (d / "imagenet_train_lmdb").symlink_to(copy)
    t = time.time()
    r = run_trainer(d, "train", "-solver", "imagenet_solver.prototxt", check=False, timeout=120)
    assert r.returncode == 1 and time.time() - t < 60
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "Check failed: imagenet_train_lmdb: record " in last and key in last, last


def test_an_empty_database_is_an_error_at_start(d):
    import lmdb
    empty = d.parent / "empty_lmdb"
    lmdb.open(str(empty), map_size=1 << 20).close()
    (d / "imagenet_train_lmdb").unlink()
    (d / "imagenet_train_lmdb").symlink_to(empty)
    r = run_trainer(d, "train", "-solver", "imagenet_solver.prototxt", check=False, timeout=60)
    assert r.returncode == 1 and "holds no records" in r.stderr and "Restarting data prefetching" not in r.stderr


def test_the_trainer_refuses_unknown_options_and_precisions(d):
    r = run_trainer(d, "train", "-solver", "imagenet_solver.prototxt", "-precision", "fp16", check=False)
    assert r.returncode == 1 and "precision 'fp16': choose from fp32, tf32, bf16" in r.stderr
    r = run_trainer(d, "train", "-solvr", "imagenet_solver.prototxt", check=False)
    assert r.returncode == 1 and "unexpected argument '-solvr'" in r.stderr


def test_a_stop_while_waiting_for_data_is_heard(d, monkeypatch):
    """A feed that delivers nothing (a reader stuck on a slow disk) never keeps a stop from working:
    the wait gives up as soon as the stop flag is set; a reader that died is an error."""
    import threading
    from transferfeat.engines.torchnet.feed import Feed
    from transferfeat.engines.torchnet.glog import Quiet
    stuck = threading.Event()
    monkeypatch.setattr(Feed, "_fill", lambda self: stuck.wait())
    feed = Feed(read(d / "imagenet_train.prototxt"), "TRAIN", 0, Quiet())
    stop = []
    threading.Timer(0.3, lambda: stop.append(1)).start()
    t = time.time()
    assert feed.next(lambda: bool(stop)) is None and time.time() - t < 5
    stuck.set()
    feed.thread.join(5)
    with pytest.raises(Error, match="the data reader stopped"):
        feed.next()
