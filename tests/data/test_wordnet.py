"""ImageNet WordNet-id class folders are shown with human names (lightnets.data.wordnet)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lightnets.data.wordnet import display_name, display_names, imagenet_names, readable_result
from lightnets.evaluation.metrics import EvalResult, per_class_metrics
from lightnets.evaluation.predict import predict
from lightnets.evaluation.report import write_report


def test_the_table_has_the_1000_imagenet_classes_in_index_order() -> None:
    names = imagenet_names()
    wnids = list(names)
    assert len(names) == 1000 and wnids == sorted(wnids)
    assert names["n01440764"] == "tench" and wnids[0] == "n01440764"
    assert names["n15075141"] == "toilet tissue" and wnids[-1] == "n15075141"
    assert names["n02219486"] == "ant" and names["n02206856"] == "bee"


def test_display_names_only_for_wnid_folders() -> None:
    assert display_name("n01440764") == "tench (n01440764)"
    assert display_name("n99999999") == "n99999999"  # a wnid outside ImageNet-1k stays as it is
    assert display_names(["n01440764", "n01443537"]) == ["tench (n01440764)", "goldfish (n01443537)"]
    assert display_names(["ants", "bees"]) == ["ants", "bees"]
    assert display_names(["n01440764", "cats"]) == ["n01440764", "cats"]  # not an ImageNet-style folder


def _result(classes: list[str]) -> EvalResult:
    cm = np.eye(2, dtype=np.int64)
    return EvalResult(1.0, 1.0, 0.1, 2, cm, per_class_metrics(cm, classes), classes)


def test_report_shows_human_names_and_keeps_ids_in_the_result(tmp_path) -> None:
    result = _result(["n01440764", "n01443537"])
    shown = readable_result(result)
    assert shown.class_names == ["tench (n01440764)", "goldfish (n01443537)"]
    assert (
        shown.per_class[1]["class"] == "goldfish (n01443537)" and shown.per_class[2]["class"] == "macro avg"
    )
    assert result.class_names == ["n01440764", "n01443537"]  # the original is untouched
    html = write_report(tmp_path, model_card={"name": "x"}, history=[], eval_result=result).read_text()
    assert "tench (n01440764)" in html and "goldfish (n01443537)" in html


def test_predictions_carry_the_display_name_and_the_class_id(tmp_path) -> None:
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(path)

    class TwoClasses(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[0.0, 3.0]]).expand(len(x), 2)

    ckpt = {"classes": ["n01440764", "n01443537"], "kwargs": {},
            "preprocessing": {"input_size": [32, 32], "resize": "exact", "interpolation": "bilinear",
                              "mean": [0.5] * 3, "std": [0.5] * 3, "mode": "RGB", "in_chans": 3}}  # fmt: skip
    result = predict((TwoClasses(), ckpt), [path], topk=2)
    (pred,) = result.predictions
    assert pred.top[0][0] == "n01443537"  # checkpoint class ids stay the folder names
    assert pred.named_top()[0][0] == "goldfish (n01443537)"
    assert pred.to_dict()["top"][0] == {
        "class": "n01443537",
        "name": "goldfish (n01443537)",
        "prob": pred.top[0][1],
    }
