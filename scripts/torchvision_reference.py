"""Write torchvision reference files for the models torchvision has (developer tool, not a dependency).

For each model: every state_dict key with its shape, the parameter count, and the logits that torchvision's
own implementation produces on a fixed input with deterministic weights (``reference_state_dict``).
tests/models/test_torchvision_parity.py loads the same weights into the lightnets model and compares, which checks
the architecture op for op, not only the key names.

torchvision cannot be installed on our CPU machines (its wheels are CUDA builds), but its pure-Python model
files run on CPU torch.  Unpack a wheel and point this script at it:

    pip download --no-deps torchvision -d /tmp/tv && unzip -q /tmp/tv/torchvision-*.whl -d /tmp/tv/site
    python scripts/torchvision_reference.py /tmp/tv/site

The package's __init__ (which loads the compiled ops) is bypassed: only torchvision.models is imported.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.reference_weights import reference_input, reference_state_dict  # noqa: E402

MODELS = [
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
]


def main(site: str) -> None:
    pkg = types.ModuleType("torchvision")
    pkg.__path__ = [str(Path(site) / "torchvision")]
    sys.modules["torchvision"] = pkg
    import torchvision.models as tvm

    out_dir = Path(__file__).resolve().parents[1] / "tests" / "expect" / "torchvision"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        model = getattr(tvm, name)().eval()
        state = reference_state_dict(model.state_dict())
        model.load_state_dict(state)
        with torch.no_grad():
            logits = model(reference_input())[0]
        record = {
            "source": f"torchvision {getattr(tvm, '__name__', 'models')} from {Path(site).name}",
            "params": sum(p.numel() for p in model.parameters()),
            "keys": [[k, list(v.shape)] for k, v in model.state_dict().items()],
            "logits": [round(float(v), 6) for v in logits],
        }
        (out_dir / f"{name}.json").write_text(json.dumps(record, indent=0))
        print(name, record["params"], len(record["keys"]))


if __name__ == "__main__":
    main(sys.argv[1])
