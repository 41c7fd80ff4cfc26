"""``lightnets.convert.from_tflite`` against the TFLite interpreter (ai-edge-litert).

The .tflite files are written by tests/tflite_writer.py from seeded lightnets MobileNets (TF-slim's graph:
SAME padding, fused ReLU6, MEAN, 1001-class FULLY_CONNECTED with a background row; for V3 HARD_SWISH, SE
blocks with MEAN / ADD+RELU6 / MUL, residual ADDs and a 1x1-conv head; Keras-style files with PAD + VALID
strided convs, whose PAD amounts decide ``padding`` / ``stem_padding``).  Float files must match the
interpreter to float precision; int8 (per-channel, dynamic-range) files must give exactly the interpreter's own
dequantised weights, and logits within the error of the interpreter's on-the-fly activation quantisation.
Needs ``lightnets[convert]`` (tflite, ai-edge-litert).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tflite", reason="tflite not installed (pip install 'lightnets[convert]')")
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed")

from helpers.tflite_writer import write_tflite  # noqa: E402
from lightnets import create_model  # noqa: E402
from lightnets.cli import main  # noqa: E402
from lightnets.convert import ConvertError, from_tflite  # noqa: E402
from lightnets.convert.tflite import quantized_input_preprocessing  # noqa: E402


def seeded(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, padding="same", **kwargs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    nn.init.normal_(model.get_classifier().weight, 0, 0.5)  # logits of a useful size
    return model.eval()


def interpreter(path) -> object:
    it = litert.Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def run(it, x: np.ndarray) -> np.ndarray:
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


CASES = [("mobilenet_v1_x0_25", "mobilenet_v1", 96), ("mobilenet_v1_x0_5", "mobilenet_v1", 97),
         ("mobilenet_v2_x0_35", "mobilenet_v2", 97), ("mobilenet_v2_x0_5", "mobilenet_v2", 128)]  # fmt: skip


@pytest.mark.parametrize(("name", "family", "size"), CASES)
def test_float_tflite_matches_the_interpreter(name, family, size, tmp_path) -> None:
    kwargs = {"act_layer": nn.ReLU6} if family == "mobilenet_v1" else {}
    path = tmp_path / "m.tflite"
    path.write_bytes(write_tflite(seeded(name, **kwargs), size))
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    ref = run(interpreter(path), x)
    model, fields = from_tflite(path, family, out=tmp_path / "m.pt")
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert ref.shape == (1, 1001) and got.shape == (1, 1000)  # the background row dropped
    assert np.abs(got - ref[:, 1:]).max() <= 1e-4 and np.abs(ref[:, 1:]).max() > 0.5
    kw = fields["kwargs"]
    assert kw["padding"] == "same" and kw["num_classes"] == 1000
    assert fields["preprocessing"]["mean"] == [0.5] * 3 and fields["preprocessing"]["input_size"] == [size, size]
    if family == "mobilenet_v1":
        assert kw["act_layer"] == "relu6"
    # BatchNorm is folded in the file: identity norms carrying the bias
    bn = model.features[0][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)


V3_CASES = [  # (name, family, size, kwargs, expected width_policy): one odd size, SE and minimalistic variants
    ("mobilenet_v3_small", "mobilenet_v3_small", 97, {"width_mult": 0.75, "width_policy": "paper"}, "paper"),
    ("mobilenet_v3_small", "mobilenet_v3_small", 64, {"width_mult": 0.5, "minimalistic": True}, "torchvision"),
    ("mobilenet_v3_large", "mobilenet_v3_large", 96, {"width_mult": 0.5, "width_policy": "paper"}, "paper"),
]


@pytest.mark.parametrize(("name", "family", "size", "kwargs", "policy"), V3_CASES)
def test_float_v3_tflite_matches_the_interpreter(name, family, size, kwargs, policy, tmp_path) -> None:
    # TF-slim's V3 graph: HARD_SWISH ops, SE as MEAN / 1x1 convs / ADD+RELU6 / MUL, residual ADDs, conv head
    path = tmp_path / "m.tflite"
    path.write_bytes(write_tflite(seeded(name, **kwargs), size))
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    ref = run(interpreter(path), x)
    model, fields = from_tflite(path, family)
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert ref.shape == (1, 1001) and got.shape == (1, 1000)
    assert np.abs(got - ref[:, 1:]).max() <= 1e-4 and np.abs(ref[:, 1:]).max() > 0.5
    kw = fields["kwargs"]
    assert kw["padding"] == "same" and kw["num_classes"] == 1000 and kw["width_mult"] == kwargs["width_mult"]
    assert kw["width_policy"] == policy and kw["minimalistic"] == kwargs.get("minimalistic", False)


PAD_CASES = [  # Keras-exported files: PAD + VALID strided convs, the stem SAME
    ("mobilenet_v3_small", "mobilenet_v3_small", 97, "static", {"padding": "same"}),
    ("mobilenet_v3_small", "mobilenet_v3_small", 97, "unknown", {"padding": "same_even", "stem_padding": "same"}),
    ("mobilenet_v2_x0_35", "mobilenet_v2", 65, "unknown", {"padding": "same_even", "stem_padding": "same"}),
    ("mobilenet_v2_x0_35", "mobilenet_v2", 64, "static", {"padding": "same_even", "stem_padding": "same"}),
]


@pytest.mark.parametrize(("name", "family", "size", "explicit_pad", "want"), PAD_CASES)
def test_explicit_pad_files_give_the_padding_they_hold(name, family, size, explicit_pad, want, tmp_path) -> None:
    # Keras's correct_pad: SAME's amounts for a known odd size, the even-size ones when the size was unknown
    kwargs = {"width_mult": 0.75, "width_policy": "paper"} if family.startswith("mobilenet_v3") else {}
    path = tmp_path / "k.tflite"
    path.write_bytes(write_tflite(seeded(name, **kwargs), size, explicit_pad=explicit_pad))
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    ref = run(interpreter(path), x)[:, 1:]
    model, fields = from_tflite(path, family)
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert {k: v for k, v in fields["kwargs"].items() if "padding" in k} == want
    assert np.abs(got - ref).max() <= 1e-4 and np.abs(ref).max() > 0.5


INT8_CASES = [("mobilenet_v2_x0_35", "mobilenet_v2", 96, {}),
              ("mobilenet_v3_small", "mobilenet_v3_small", 97, {"width_mult": 0.75, "width_policy": "paper"})]  # fmt: skip


def _dequantised(detail: dict, values: np.ndarray) -> np.ndarray:
    """An int8 per-channel weight as real numbers, in PyTorch's conv layout."""
    q = detail["quantization_parameters"]
    axis = q["quantized_dimension"]
    shape = [1] * values.ndim
    shape[axis] = -1
    real = (values.astype(np.float64) - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)
    return real.transpose(3, 0, 1, 2) if axis == 3 else real.transpose(0, 3, 1, 2)


@pytest.mark.parametrize(("name", "family", "size", "kwargs"), INT8_CASES)
def test_int8_weights_dequantised_as_the_interpreter_reads_them(name, family, size, kwargs, tmp_path) -> None:
    path = tmp_path / "q.tflite"
    path.write_bytes(write_tflite(seeded(name, **kwargs), size, int8=True))
    it = interpreter(path)
    model, _ = from_tflite(path, family)
    # Linear layers (V3's head and classifier are 1x1 convs in the file) compared as 1x1 convs
    ours = [p.detach().numpy().reshape(*p.shape, *(1, 1)[: 4 - p.ndim]) for p in model.parameters() if p.ndim > 1]
    checked = 0
    for detail in it.get_tensor_details():
        if detail["dtype"] != np.int8 or len(detail["quantization_parameters"]["scales"]) < 2:
            continue
        real = _dequantised(detail, it.get_tensor(detail["index"]))
        if real.shape[0] == 1001:  # V3's logits conv: the background row is dropped
            real = real[1:]
        # several layers share a shape: one of them must hold exactly these values
        same = [w for w in ours if w.shape == real.shape]
        assert min(np.abs(w - real).max() for w in same) <= 1e-6
        checked += 1
    assert checked >= 10
    x = np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
    ref = run(it, x)[:, 1:]
    with torch.no_grad():
        got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    # the interpreter quantises activations to int8 on the fly (dynamic range): a few steps of 1/127 of the
    # logit range apart, never more
    assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max()


def test_quantised_input_convention_as_preprocessing() -> None:
    # uint8 input with scale 1/128, zero point 128: real = (pixel - 128) / 128
    p = quantized_input_preprocessing((224, 224), 3, 1 / 128, 128)
    pixel = 200.0
    assert abs(((pixel / 255 - p["mean"][0]) / p["std"][0]) - (pixel - 128) / 128) < 1e-9
    p8 = quantized_input_preprocessing((224, 224), 9, 1 / 128, 0)  # int8: q = pixel - 128
    assert abs(((pixel / 255 - p8["mean"][0]) / p8["std"][0]) - (pixel - 128) / 128) < 1e-9


def test_wrong_family_or_file_is_one_clear_error(tmp_path, capsys) -> None:
    path = tmp_path / "v2.tflite"
    path.write_bytes(write_tflite(seeded("mobilenet_v2_x0_35"), 96))
    with pytest.raises(ConvertError, match="fit no mobilenet_v1 at widths"):
        from_tflite(path, "mobilenet_v1")
    valid = tmp_path / "valid.tflite"  # stride-2 VALID convs with no PAD: neither SAME mode
    valid.write_bytes(write_tflite(seeded("mobilenet_v2_x0_35"), 96, explicit_pad="none"))
    with pytest.raises(ConvertError, match="stride-2 DEPTHWISE_CONV_2D is VALID with no PAD op before it"):
        from_tflite(valid, "mobilenet_v2")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    assert main(["convert", str(junk), "--model", "mobilenet_v2", "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.tflite" in err and not (tmp_path / "x.pt").exists()
    assert main(["convert", str(path), "--model", "mobilenet_v2", "-o", str(tmp_path / "ok.pt")]) == 0
