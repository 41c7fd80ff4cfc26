"""Models that torchvision also has: same state_dict keys and shapes, same parameter count, and the same
logits as torchvision's own implementation under identical deterministic weights.

The reference files in tests/expect/torchvision/ were written by scripts/torchvision_reference.py from
torchvision 0.29.2's model code; torchvision is not needed to run these tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lightnets
from helpers.reference_weights import reference_input, reference_state_dict

EXPECT = Path(__file__).resolve().parents[1] / "expect" / "torchvision"
NAMES = sorted(p.stem for p in EXPECT.glob("*.json"))


def _manifest(name: str) -> dict:
    return json.loads((EXPECT / f"{name}.json").read_text())


def test_reference_files_present() -> None:
    assert len(NAMES) == 7


@pytest.mark.parametrize("name", NAMES)
def test_keys_shapes_and_params_match_torchvision(name: str) -> None:
    ref = _manifest(name)
    model = lightnets.create_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: shape for k, shape in ref["keys"]}
    assert sorted(set(theirs) - set(ours)) == [], "keys missing from lightnets"
    assert sorted(set(ours) - set(theirs)) == [], "keys torchvision does not have"
    assert {k for k in ours if ours[k] != theirs[k]} == set()
    assert sum(p.numel() for p in model.parameters()) == ref["params"]


@pytest.mark.parametrize("name", NAMES)
def test_logits_match_torchvision(name: str) -> None:
    ref = _manifest(name)
    # Same tensors, drawn in torchvision's key order, as the script did.
    template = {
        k: torch.zeros(shape, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
        for k, shape in ref["keys"]
    }
    model = lightnets.create_model(name).eval()
    model.load_state_dict(reference_state_dict(template))
    with torch.no_grad():
        logits = model(reference_input())[0]
    expected = torch.tensor(ref["logits"])
    torch.testing.assert_close(logits, expected, atol=2e-5, rtol=1e-4)
