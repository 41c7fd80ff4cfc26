"""The int8 quantizer settings chosen by ``benchmarks/int8_agreement.py --select`` (agreement with fp32 on
held-out train photos, ImageNet ShuffleNetV2) are the ones ``lightnets export --quantize int8`` uses: each
format's module constants have the chosen values, and the export really passes them to its quantizer."""

from __future__ import annotations

import pytest
import torch

from helpers.runtime_cases import request, tiny

#: the settings chosen on held-out train photos (see each module's comment for the numbers)
ONNX_CHOSEN = ("MinMax", {})
OPENVINO_CHOSEN = ("performance", True)
TFLITE_OBSERVER, TFLITE_SHARE = "histogram", True
EXECUTORCH_CHOSEN = ("histogram", False, True)  # (ACT_OBSERVER, DYNAMIC_LOGITS, SHARE_MOVEMENT_SCALES)


class _Stop(Exception):
    """Raised by a captured quantizer call: the test has what it needs, the export need not finish."""


def test_onnx_export_passes_the_chosen_calibration(monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime.quantization as ortq

    from lightnets.deploy.runtimes import get_format
    from lightnets.deploy.runtimes import onnx as onnx_module

    assert (onnx_module.CALIBRATION, onnx_module.EXTRA_OPTIONS) == ONNX_CHOSEN
    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(ortq, "quantize_static", capture)
    with pytest.raises(_Stop):
        get_format("onnx").export(request(tiny(), tmp_path / "q.onnx", 32, quantize="int8"))
    assert seen["calibrate_method"] == getattr(ortq.CalibrationMethod, ONNX_CHOSEN[0])
    assert seen["extra_options"] == ONNX_CHOSEN[1]
    assert seen["per_channel"] is True


def test_openvino_export_passes_the_chosen_nncf_settings(monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    nncf = pytest.importorskip("nncf")
    from lightnets.deploy.runtimes import get_format
    from lightnets.deploy.runtimes import openvino as ov_module

    assert (ov_module.PRESET, ov_module.FAST_BIAS_CORRECTION) == OPENVINO_CHOSEN
    seen = {}

    def capture(model, dataset, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(nncf, "quantize", capture)
    with pytest.raises(_Stop):
        get_format("openvino").export(request(tiny(), tmp_path / "q.xml", 32, quantize="int8"))
    assert seen["preset"] == nncf.QuantizationPreset(OPENVINO_CHOSEN[0])
    assert seen["fast_bias_correction"] is OPENVINO_CHOSEN[1]


def _act_observer(config) -> type:
    return config.input_activation.observer_or_fake_quant_ctr.p.func


def test_pt2e_formats_use_the_chosen_activation_observer():
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    from lightnets.deploy.runtimes._common import with_act_observer

    observers = {"minmax": MinMaxObserver, "histogram": HistogramObserver}
    pytest.importorskip("litert_torch")
    from lightnets.deploy.runtimes import tflite as tflite_module

    assert tflite_module.ACT_OBSERVER == TFLITE_OBSERVER
    config = tflite_module._quantizer(()).global_config
    assert _act_observer(config) is observers[TFLITE_OBSERVER]
    assert config.output_activation is config.input_activation
    with pytest.raises(ValueError, match="activation observer must be one of"):
        with_act_observer(config, "percentile")


def test_tflite_data_movement_shares_the_concat_scale():
    """With SHARE_MOVEMENT_SCALES every transpose / contiguous / slice between two ShuffleNetV2 concats takes
    its input's scale (nothing left for the converter to requantize)."""
    litert_torch = pytest.importorskip("litert_torch")
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    import lightnets
    from lightnets.deploy.runtimes import tflite as tflite_module
    from lightnets.deploy.runtimes._common import MOVEMENT_OPS, export_ready
    from lightnets.deploy.runtimes.executorch import slice_channel_split

    assert tflite_module.SHARE_MOVEMENT_SCALES is TFLITE_SHARE
    model = export_ready(lightnets.create_model("shufflenet_v2_x0_5", num_classes=10))
    nhwc = litert_torch.to_channel_last_io(model, args=[0]).eval()
    slice_channel_split(nhwc)
    graph = torch.export.export(nhwc, (torch.zeros(1, 64, 64, 3),), strict=True).module()
    quantizer = tflite_module._quantizer(())
    quantizer.annotate(quantizer.transform_for_annotation(graph))
    moves = [n for n in graph.graph.nodes if n.op == "call_function" and n.target in MOVEMENT_OPS
             and n.args[0].op != "placeholder"]  # fmt: skip
    assert len(moves) >= 3 * 16  # the shuffle's view / transpose / contiguous / view and the split's slices
    for node in moves:
        note = node.meta.get("quantization_annotation")
        assert note is not None and isinstance(note.output_qspec, SharedQuantizationSpec), node.name


def test_executorch_logits_layer_choice():
    pytest.importorskip("executorch")
    import lightnets
    from lightnets.deploy.runtimes import executorch as et_module
    from lightnets.deploy.runtimes._common import logits_layer

    assert (et_module.ACT_OBSERVER, et_module.DYNAMIC_LOGITS, et_module.SHARE_MOVEMENT_SCALES) == EXECUTORCH_CHOSEN
    assert logits_layer(lightnets.create_model("shufflenet_v2_x0_5", num_classes=10)) == "fc"
    assert logits_layer(tiny()) is None  # not a lightnets model: no head_layout, nothing special-cased


def test_executorch_data_movement_shares_the_concat_scale():
    """XNNPACK's own propagation stops at the shuffle's ``contiguous``: with SHARE_MOVEMENT_SCALES every
    data-movement node after a quantized one is annotated with a shared scale."""
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    import lightnets
    from lightnets.deploy.runtimes import executorch as et_module
    from lightnets.deploy.runtimes._common import MOVEMENT_OPS, export_ready

    model = export_ready(lightnets.create_model("shufflenet_v2_x0_5", num_classes=10))
    et_module.slice_channel_split(model)
    graph = torch.export.export(model, (torch.zeros(1, 3, 32, 32),)).module()
    quantizer = et_module._quantizer_class()().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.annotate(quantizer.transform_for_annotation(graph))
    moves = [n for n in graph.graph.nodes if n.op == "call_function" and n.target in MOVEMENT_OPS]
    assert len(moves) >= 3 * 16
    for node in moves:
        note = node.meta.get("quantization_annotation")
        assert note is not None and isinstance(note.output_qspec, SharedQuantizationSpec), node.name
