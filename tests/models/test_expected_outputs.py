"""Expected-output files: seeded models on a fixed input produce the logits saved in tests/expect/logits/.

They pin the architectures that have no torchvision reference (MobileNetV1, ShuffleNetV1, the paper-policy
MobileNetV3 0.75, small_input stems), so any change to a layer, its order or a width shows up here.
Regenerate only on purpose:  LIGHTNETS_REGENERATE_EXPECT=1 pytest tests/models/test_expected_outputs.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import lightnets
from helpers.reference_weights import reference_input, reference_state_dict

EXPECT = Path(__file__).resolve().parents[1] / "expect" / "logits"
CASES = {
    "mobilenet_v1_x0_25": {},
    "shufflenet_v1_g3_x0_5": {},
    "shufflenet_v1_g8_x0_5": {},
    "mobilenet_v3_large_075": {},
    "mobilenet_v3_small_minimal": {},
    "mobilenet_v2_x0_35": {"small_input": True, "in_chans": 1, "num_classes": 10},
    "shufflenet_v2_x0_5": {"small_input": True, "in_chans": 1, "num_classes": 10},
}


def _logits(name: str, kwargs: dict) -> torch.Tensor:
    model = lightnets.create_model(name, **kwargs).eval()
    model.load_state_dict(reference_state_dict(model.state_dict(), seed=7))
    size = (32, 28) if kwargs.get("small_input") else (96, 80)
    with torch.no_grad():
        return model(reference_input(size, in_chans=kwargs.get("in_chans", 3)))[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_expected_file(name: str) -> None:
    path = EXPECT / f"{name}.json"
    logits = _logits(name, CASES[name])
    if os.environ.get("LIGHTNETS_REGENERATE_EXPECT"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kwargs": CASES[name], "logits": [round(float(v), 6) for v in logits]}))
    expected = json.loads(path.read_text())
    assert expected["kwargs"] == CASES[name]
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), atol=2e-5, rtol=1e-4)
