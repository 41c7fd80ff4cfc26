"""lightnets.deploy: the inference form of every family, and the engine contract shared by predict and bench."""

from __future__ import annotations

import copy
import math
import sys

import pytest
import torch
from torch import nn

import lightnets
from lightnets import deploy
from lightnets.registry import get_card

SIZE = 64  # small inputs keep the suite fast; the deploy path does not depend on the resolution


def smallest_model_name(family: str) -> str:
    """The registered variant of ``family`` with the fewest published MACs."""
    return min(
        lightnets.list_models(family=family),
        key=lambda n: min((r.macs for r in get_card(n).refs if r.macs), default=math.inf),
    )


def trained_like_model(name: str, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A random model whose BatchNorm layers have non-trivial running statistics and affine parameters, and
    whose classifier gives logits of order 1 (so that 1e-5 is a meaningful tolerance), in eval mode."""
    torch.manual_seed(seed)
    model = lightnets.create_model(name, num_classes=num_classes)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
            m.momentum = None  # running stats = average over the batches below
            m.reset_running_stats()
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, 1 / math.sqrt(m.in_features))
        model.train()
        for _ in range(3):
            model(torch.randn(4, model_in_chans(model), SIZE, SIZE) * 1.5 + 0.3)
        for m in norms:
            m.momentum = 0.1
    return model.eval()


def model_in_chans(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


FAMILIES = lightnets.list_families()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the test machine is shared, and OpenMP teams stall badly when oversubscribed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("family", FAMILIES)
def test_optimize_matches_eager_per_family(family: str) -> None:
    name = smallest_model_name(family)
    model = trained_like_model(name)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    acts = {
        t: sum(isinstance(m, t) for m in model.modules()) for t in (nn.ReLU6, nn.Hardswish, nn.Hardsigmoid)
    }
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = model(x)
        exact = copy.deepcopy(model).double()(x.double())  # the same network in float64
        deployed = deploy.optimize(model, example_input=x)  # "auto": times both memory formats on x
        outputs = {
            "auto": deployed(x),
            "channels_last": deploy.optimize(model, channels_last=True)(x),
            "contiguous": deploy.optimize(model, channels_last=False)(x),
        }
    scale = float(ref.abs().max())
    assert scale > 0.1 and (ref[0] - ref[1]).abs().max() > 1e-3, (
        "logits too small / input-independent to test"
    )
    eager_error = float((ref.double() - exact).abs().max())
    for layout, out in outputs.items():
        # Equal to the eager model up to float32 rounding.  1e-5 is at the noise floor for logits of order 1
        # (the eager float32 model is itself up to ~3e-5 away from float64 here), so the bound is relative
        # to the logit scale, and folding must not move the result further from exact arithmetic than
        # float32 rounding already does.
        assert float((out - ref).abs().max()) <= 2e-5 * max(1.0, scale), (name, layout)
        assert float((out.double() - exact).abs().max()) <= 2 * eager_error + 1e-6, (name, layout)
    # folded, dropout gone, eval, frozen; activations kept as they were (exact ReLU6 / hard-swish)
    assert n_bn > 0 and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deployed.modules())
    assert not any(isinstance(m, nn.Dropout) for m in deployed.modules())
    assert not deployed.training and not any(p.requires_grad for p in deployed.parameters())
    assert {t: sum(isinstance(m, t) for m in deployed.modules()) for t in acts} == acts
    # the model given is left as it was
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == n_bn


def test_optimize_channels_last_option_and_validation() -> None:
    model = trained_like_model(smallest_model_name("mobilenet_v2"))
    stem = next(m for m in deploy.optimize(model, channels_last=True).modules() if isinstance(m, nn.Conv2d))
    assert stem.kernel_size == (3, 3)  # a 3x3 kernel: the two memory formats differ
    assert stem.weight.is_contiguous(memory_format=torch.channels_last) and not stem.weight.is_contiguous()
    plain = next(m for m in deploy.optimize(model, channels_last=False).modules() if isinstance(m, nn.Conv2d))
    assert plain.weight.is_contiguous()
    with pytest.raises(ValueError, match="channels_last"):
        deploy.optimize(model, channels_last="yes")
    with pytest.raises(TypeError):
        deploy.optimize("mobilenet_v2")  # type: ignore[arg-type]


def test_fold_batchnorm_needs_eval_mode_and_counts() -> None:
    model = trained_like_model(smallest_model_name("shufflenet_v2"))
    with pytest.raises(ValueError, match="eval mode"):
        deploy.fold_batchnorm(model.train())
    model.eval()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert deploy.fold_batchnorm(model) == n_bn


# ---- the engine contract -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def contract_model() -> nn.Module:
    # MobileNetV3 has everything that needs care: hard-swish, hard-sigmoid in SE, a classifier with dropout
    return trained_like_model("mobilenet_v3_small", seed=1)


_SLOW_ENGINES = {e for e in deploy.ENGINES if e.startswith(("executorch", "tflite", "ncnn", "openvino-"))}


@pytest.mark.parametrize(
    "engine", [pytest.param(e, marks=pytest.mark.slow) if e in _SLOW_ENGINES else e for e in deploy.ENGINES]
)  # the on-device formats export a file first (seconds to tens of seconds each): slow
def test_every_available_engine_gives_the_eager_logits(engine: str, contract_model: nn.Module) -> None:
    if engine not in deploy.available_engines():
        with pytest.raises(deploy.EngineUnavailableError):
            deploy.make_runner(contract_model, engine, input_shape=(1, 3, SIZE, SIZE))
        pytest.skip(f"{engine} not installed")
    runner = deploy.make_runner(contract_model, engine, input_shape=(1, 3, SIZE, SIZE), threads=1)
    assert runner.engine == engine and engine in runner.name and runner.build_seconds >= 0
    threads_before = torch.get_num_threads()
    for batch in (1, 3):  # prepared at batch 1, dynamic batch
        x = torch.randn(batch, 3, SIZE, SIZE)
        with torch.no_grad():
            ref = contract_model(x)
        out = runner(x)
        assert isinstance(out, torch.Tensor) and out.shape == ref.shape and out.dtype == torch.float32
        if engine.endswith("-int8"):  # calibrated on random inputs, random weights: int8 noise, not float noise
            assert float((out - ref).norm() / ref.norm()) <= 0.7, (engine, batch)
        else:
            assert (out - ref).abs().max() <= 1e-4, (engine, batch)
    assert torch.get_num_threads() == threads_before  # a runner's thread setting does not leak
    assert contract_model.training is False
    with pytest.raises(ValueError, match="expects input of shape"):
        runner(torch.randn(1, 3, SIZE + 8, SIZE))
    with pytest.raises(ValueError, match="float32"):
        runner(torch.randn(1, 3, SIZE, SIZE, dtype=torch.float64))


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_large_batches_on_parallel_streams_give_the_same_logits(
    engine: str, contract_model: nn.Module
) -> None:
    if engine not in deploy.available_engines():
        pytest.skip(f"{engine} not installed")
    runner = deploy.make_runner(contract_model, engine, input_shape=(1, 3, SIZE, SIZE), threads=2)
    assert runner.info.get("streams") == 2
    x = torch.randn(2 * deploy.MICRO_BATCH + 1, 3, SIZE, SIZE)  # two full micro-batches and a remainder
    with torch.no_grad():
        ref = contract_model(x)
    out = runner(x)
    assert out.shape == ref.shape and (out - ref).abs().max() <= 1e-4


def test_make_runner_rejects_bad_arguments(contract_model: nn.Module) -> None:
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        deploy.make_runner(contract_model, "tensorrt", input_shape=(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="input_shape"):
        deploy.make_runner(contract_model, "eager", input_shape=(3, SIZE, SIZE))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        deploy.make_runner(contract_model, "eager", input_shape=(1, 3, SIZE, SIZE), threads=0)


def test_missing_package_names_it(monkeypatch: pytest.MonkeyPatch, contract_model: nn.Module) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` raise ImportError
    assert "openvino" not in deploy.available_engines()
    with pytest.raises(
        deploy.EngineUnavailableError, match=r"needs the package\(s\) openvino.*pip install openvino"
    ):
        deploy.make_runner(contract_model, "openvino", input_shape=(1, 3, SIZE, SIZE))
    # also a ValueError: the CLI prints it as one line
    assert issubclass(deploy.EngineUnavailableError, ValueError)
