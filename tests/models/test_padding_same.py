"""``padding="same"``: TensorFlow's SAME rule in every family, checked against hand-computed F.pad + conv, against
Keras's own layers (when Keras is installed), and through checkpoints, BatchNorm folding and ONNX export."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightnets import create_model, list_models
from lightnets.models.layers import Conv2dSame, Pool2dSame, make_conv2d, make_pool2d, same_pads

SIZES = [(32, 32), (33, 33), (31, 36), (17, 16)]


def test_same_pads_by_hand() -> None:
    assert same_pads(224, 3, 2) == (0, 1)  # even input: the extra row at the bottom only
    assert same_pads(225, 3, 2) == (1, 1)  # odd input: symmetric
    assert same_pads(224, 5, 2) == (1, 2)
    assert same_pads(225, 5, 2) == (2, 2)
    assert same_pads(7, 3, 1) == (1, 1) and same_pads(8, 2, 1) == (0, 1)  # stride 1; even kernel
    assert same_pads(225, 3, 2, even=True) == (0, 1) and same_pads(225, 5, 2, even=True) == (1, 2)
    for size in range(5, 40):
        for k in (1, 3, 5, 7):
            for s in (1, 2, 3):
                before, after = same_pads(size, k, s)
                assert (size + before + after - k) // s + 1 == math.ceil(size / s)  # SAME's output size
                assert 0 <= after - before <= 1


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", SIZES)
def test_conv_matches_hand_padded_conv(kernel: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = make_conv2d(4, 4, kernel, stride=2, padding="same", groups=4, bias=True)
    assert isinstance(conv, Conv2dSame)
    x = torch.randn(2, 4, *size)
    top, bottom = same_pads(size[0], kernel, 2)
    left, right = same_pads(size[1], kernel, 2)
    ref = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride=2, groups=4)
    out = conv(x)
    assert out.shape[-2:] == (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_static_layers_stay_plain_convs() -> None:
    # stride 1 with an odd kernel: SAME is the symmetric padding, known without the input size
    conv = make_conv2d(4, 8, 3, stride=1, padding="same")
    assert type(conv) is nn.Conv2d and conv.padding == (1, 1)
    assert type(make_conv2d(4, 8, 3, stride=2)) is nn.Conv2d  # the default stays PyTorch's symmetric padding
    assert type(make_pool2d("max", 3, 2)) is nn.MaxPool2d


@pytest.mark.parametrize("size", SIZES)
def test_pools_follow_tf_semantics(size: tuple[int, int]) -> None:
    x = torch.randn(1, 3, *size)
    top, bottom = same_pads(size[0], 3, 2)
    left, right = same_pads(size[1], 3, 2)
    pads = (left, right, top, bottom)
    ref_max = F.max_pool2d(F.pad(x, pads, value=-math.inf), 3, 2)
    torch.testing.assert_close(make_pool2d("max", 3, 2, "same")(x), ref_max, rtol=0, atol=0)
    # TF's average counts real pixels only: window sums over a padded mask of ones
    windows = F.unfold(F.pad(x, pads), 3, stride=2)
    counts = F.unfold(F.pad(torch.ones_like(x[:, :1]), pads), 3, stride=2).sum(1, keepdim=True)
    sums = windows.view(1, 3, 9, -1).sum(2)
    ref_avg = (sums / counts).view(1, 3, *ref_max.shape[-2:])
    out = make_pool2d("avg", 3, 2, "same")(x)
    assert isinstance(make_pool2d("avg", 3, 2, "same"), Pool2dSame)
    torch.testing.assert_close(out, ref_avg, rtol=1e-6, atol=1e-6)


def test_bad_padding_mode_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"padding must be one of \['symmetric', 'same', 'same_even'\], got 'SAME'"):
        create_model("mobilenet_v2", padding="SAME")


SMALLEST = ["mobilenet_v1_x0_25", "mobilenet_v2_x0_35", "mobilenet_v3_small", "shufflenet_v1_g3_x0_5",
            "shufflenet_v2_x0_5"]  # fmt: skip


@pytest.mark.parametrize("name", list_models())
def test_same_padding_keeps_every_key_and_shape(name: str) -> None:
    with torch.device("meta"):  # shapes only
        default, same = create_model(name), create_model(name, padding="same")
    assert not any(isinstance(m, (Conv2dSame, Pool2dSame)) for m in default.modules())  # default unchanged
    assert any(isinstance(m, Conv2dSame) for m in same.modules())
    assert {k: v.shape for k, v in default.state_dict().items()} == {
        k: v.shape for k, v in same.state_dict().items()
    }


@pytest.mark.parametrize("name", SMALLEST)
def test_same_padding_gives_sames_sizes_and_differs_only_on_even_inputs(name: str) -> None:
    sym = _trained_like(name)
    same = _trained_like(name, padding="same")
    same.load_state_dict(sym.state_dict())
    for h, w in ((64, 64), (65, 71), (97, 97)):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            feats = same.forward_features(x)
            diff = float((feats - sym.forward_features(x)).abs().max())
        expect = (h, w)
        for _ in range(5):  # five stride-2 stages, each ceil(n / 2) under SAME
            expect = (math.ceil(expect[0] / 2), math.ceil(expect[1] / 2))
        assert tuple(feats.shape[-2:]) == expect
        if h == 97 and name.startswith("mobilenet"):
            # 97 -> 49 -> 25 -> 13 -> 7 -> 4: every stride-2 input is odd, SAME is symmetric there
            assert diff == 0.0
        if h == 64:
            assert diff > 1e-3  # even inputs: the grid shifts by one pixel, the features change


def _trained_like(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs)
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding has something to fold
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("name", ["mobilenet_v2_x0_35", "shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5"])
def test_checkpoint_optimize_and_onnx_keep_same_padding(name: str, tmp_path) -> None:
    from lightnets.data.transforms import make_preprocessing
    from lightnets.deploy import optimize
    from lightnets.train.checkpoint import model_from_checkpoint, save_checkpoint

    model = _trained_like(name, padding="same")
    path = save_checkpoint(
        tmp_path / "m.pt", model, arch=name, kwargs={"num_classes": 10, "padding": "same"},
        classes=[str(i) for i in range(10)], preprocessing=make_preprocessing("imagenet", 64),
    )
    loaded, ckpt = model_from_checkpoint(path)
    assert ckpt["kwargs"]["padding"] == "same"
    for size in (64, 67):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ref = model(x)
            torch.testing.assert_close(loaded(x), ref, rtol=0, atol=0)
            assert (optimize(loaded, channels_last=False)(x) - ref).abs().max() <= 1e-4
    pytest.importorskip("onnxruntime")
    from lightnets.deploy import onnx_export as export

    for size in (64, 67):  # an even and an odd size: different pads, each static in its export
        report = export.export_onnx(loaded, tmp_path / f"m{size}.onnx", input_shape=(1, 3, size, size))
        assert report.max_abs_diff <= 1e-4 and report.logit_scale > 0.1


keras = None
if os.environ.get("KERAS_BACKEND", "torch") == "torch":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras  # noqa: F811
    except ImportError:
        keras = None


@pytest.mark.skipif(keras is None, reason="keras not installed (pip install 'lightnets[convert]')")
@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", SIZES)
def test_conv_matches_keras_same_padding(kernel: int, size: tuple[int, int]) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 4)).astype("float32")
    dense = keras.layers.Conv2D(6, kernel, strides=2, padding="same", use_bias=True)
    depthwise = keras.layers.DepthwiseConv2D(kernel, strides=2, padding="same", use_bias=False)
    for layer, groups, out in ((dense, 1, 6), (depthwise, 4, 4)):
        ref = np.asarray(keras.ops.convert_to_numpy(layer(x)))
        conv = make_conv2d(4, out, kernel, stride=2, padding="same", groups=groups, bias=groups == 1)
        weights = layer.get_weights()
        kernel_hwio = weights[0]  # (k, k, in, out) or depthwise (k, k, in, 1)
        w = kernel_hwio.transpose(3, 2, 0, 1) if groups == 1 else kernel_hwio.transpose(2, 3, 0, 1)
        conv.weight.data = torch.from_numpy(np.ascontiguousarray(w))
        if groups == 1:
            conv.bias.data = torch.from_numpy(weights[1])
        got = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-5


@pytest.mark.skipif(keras is None, reason="keras not installed (pip install 'lightnets[convert]')")
@pytest.mark.parametrize("size", SIZES)
def test_pools_match_keras_same_padding(size: tuple[int, int]) -> None:
    import numpy as np

    x = np.random.default_rng(1).standard_normal((1, *size, 3)).astype("float32")
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    for kind, layer in (("max", keras.layers.MaxPooling2D), ("avg", keras.layers.AveragePooling2D)):
        if kind == "avg" and (size[0] % 2 == 0 or size[1] % 2 == 0):
            # Keras 3's torch backend zero-pads asymmetric SAME windows and then counts those zeros; TF's
            # avg_pool (and ours, test_pools_follow_tf_semantics) divides by the real pixels only.  Compared
            # where SAME is symmetric and the two agree.
            continue
        ref = np.asarray(keras.ops.convert_to_numpy(layer(3, strides=2, padding="same")(x)))
        got = make_pool2d(kind, 3, 2, "same")(xt).permute(0, 2, 3, 1).numpy()
        assert np.abs(got - ref).max() <= 1e-5, kind


@pytest.mark.parametrize("name", ["mobilenet_v1_x0_25", "shufflenet_v2_x0_5"])
def test_onnx_graph_of_same_padding_has_constant_pads_and_no_pad_node(name: str) -> None:
    """The exported graph writes TF's pads into each Conv / MaxPool (ONNX allows asymmetric pads), so it has
    the symmetric model's ops exactly: no Pad node and no shape arithmetic for a runtime to trip on; it still
    gives the eager model's logits, which keeps its input-size-dependent pads."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from collections import Counter

    from lightnets.deploy.onnx_graph import onnx_model

    torch.manual_seed(0)
    same = create_model(name, padding="same", num_classes=5).eval()
    sym = create_model(name, num_classes=5).eval()
    graph = onnx_model(same, (1, 3, 64, 64))
    ops = Counter(n.op_type for n in graph.graph.node)
    assert "Pad" not in ops and "Shape" not in ops
    assert ops == Counter(n.op_type for n in onnx_model(sym, (1, 3, 64, 64)).graph.node)
    assert all(m.fixed_pads is None for m in same.modules() if isinstance(m, Conv2dSame | Pool2dSame))  # a copy
    x = torch.randn(2, 3, 64, 64)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), same(x), atol=1e-4)
    onnx.checker.check_model(graph)
