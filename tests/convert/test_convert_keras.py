"""``lightnets convert`` / ``lightnets.convert.from_keras`` against Keras itself.

Each keras.applications model is built with ``weights=None`` (seeded random weights) and random, non-trivial
BatchNorm statistics, saved as .keras / .weights.h5 / legacy .h5, converted, and the lightnets model's logits
must match Keras's own forward pass (max abs diff <= 1e-4) on real ants / bees photos, through the
checkpoint's recorded preprocessing.  Needs ``lightnets[convert]`` (keras, h5py; Keras runs on torch).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="keras not installed (pip install 'lightnets[convert]')")
pytest.importorskip("h5py", reason="h5py not installed (pip install 'lightnets[convert]')")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend chosen by the environment
    pytest.skip("these tests run Keras on the torch backend (KERAS_BACKEND=torch)", allow_module_level=True)

from PIL import Image  # noqa: E402

from lightnets.cli import main  # noqa: E402
from lightnets.convert import ConvertError, from_keras  # noqa: E402
from lightnets.train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402

TOL = 1e-4


def keras_model(builder: str, seed: int = 0, **kwargs: object) -> object:
    """A keras.applications model with seeded weights and random BatchNorm statistics (logits out)."""
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, builder)(weights=None, classifier_activation=None, **kwargs)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, _, _, _ = layer.get_weights()
            n = gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-0.2, 0.2, n), rng.uniform(-0.5, 0.5, n),
                               rng.uniform(0.5, 2.0, n)])  # fmt: skip
    return model


def save(model: object, path: Path) -> Path:
    if path.name.endswith(".weights.h5"):
        model.save_weights(path)
    else:
        model.save(path)
    return path


def photos(shared_data: Path, size: tuple[int, int], n: int = 4) -> np.ndarray:
    """n real photos (half ants, half bees) as uint8-valued float32 (n, H, W, 3), resized to ``size``."""
    val = shared_data / "hymenoptera_data" / "val"
    files = sorted((val / "ants").glob("*.jpg"))[: n // 2] + sorted((val / "bees").glob("*.jpg"))[: n - n // 2]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize(size[::-1], Image.BILINEAR), np.float32)
                     for f in files])  # fmt: skip


def lightnets_input(pixels: np.ndarray, preprocessing: dict) -> torch.Tensor:
    """0..255 pixels normalised as the checkpoint says: (x / 255 - mean) / std, NCHW."""
    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)
    return torch.from_numpy(((pixels / 255.0 - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)


def assert_matches(kmodel: object, file: Path, family: str, pixels: np.ndarray, builtin_rescaling: bool) -> dict:
    model, fields = from_keras(file, family)
    keras_in = pixels if builtin_rescaling else pixels / 127.5 - 1.0  # Keras's preprocess_input ("tf" mode)
    ref = keras.ops.convert_to_numpy(kmodel(keras_in, training=False))
    with torch.no_grad():
        got = model(lightnets_input(pixels, fields["preprocessing"])).numpy()
    assert got.shape == ref.shape
    assert np.abs(ref).max() > 0.05  # logits that say something
    assert np.abs(got - ref).max() <= TOL, np.abs(got - ref).max()
    return fields


# (Keras builder, family, builder kwargs, file suffix, input size)
CASES = [
    ("MobileNet", "mobilenet_v1", {"alpha": 0.25, "input_shape": (128, 128, 3)}, ".keras", (128, 128)),
    ("MobileNet", "mobilenet_v1", {"alpha": 0.5, "input_shape": (161, 161, 3)}, ".h5", (161, 161)),
    ("MobileNet", "mobilenet_v1", {"alpha": 0.75, "input_shape": (200, 200, 3), "classes": 7}, ".weights.h5",
     (200, 200)),
    ("MobileNetV2", "mobilenet_v2", {"alpha": 0.35, "input_shape": (97, 97, 3)}, ".keras", (97, 97)),
    ("MobileNetV2", "mobilenet_v2", {"alpha": 1.4, "input_shape": (96, 96, 3)}, ".weights.h5", (96, 96)),
    ("MobileNetV2", "mobilenet_v2", {"alpha": 0.5, "input_shape": (160, 131, 3), "classes": 5}, ".h5", (160, 131)),
    ("MobileNetV3Small", "mobilenet_v3_small", {"alpha": 0.75, "input_shape": (96, 96, 3)}, ".keras", (96, 96)),
    ("MobileNetV3Small", "mobilenet_v3_small", {"alpha": 0.5, "minimalistic": True, "input_shape": (129, 129, 3)},
     ".h5", (129, 129)),
    ("MobileNetV3Small", "mobilenet_v3_small", {"alpha": 1.0}, ".keras", (113, 113)),  # no fixed size: same_even
    ("MobileNetV3Large", "mobilenet_v3_large", {"alpha": 1.0, "input_shape": (224, 224, 3)}, ".weights.h5",
     (224, 224)),
    ("MobileNetV3Large", "mobilenet_v3_large", {"alpha": 0.75, "minimalistic": True}, ".h5", (99, 99)),
]


@pytest.mark.parametrize(("builder", "family", "kwargs", "suffix", "size"), CASES,
                         ids=[f"{c[0]}-{c[2].get('alpha')}-{c[3]}-{c[4][0]}x{c[4][1]}" for c in CASES])  # fmt: skip
def test_converted_logits_match_keras(builder, family, kwargs, suffix, size, shared_data, tmp_path) -> None:
    kmodel = keras_model(builder, **kwargs)
    file = save(kmodel, tmp_path / f"model{suffix}")
    fields = assert_matches(kmodel, file, family, photos(shared_data, size), builder.startswith("MobileNetV3"))
    kw = fields["kwargs"]
    assert kw["width_mult"] == kwargs["alpha"] and kw["num_classes"] == kwargs.get("classes", 1000)
    assert kw["padding"] in ("same", "same_even")
    if suffix != ".weights.h5" and "input_shape" in kwargs:  # the size the model was built for is recorded
        assert fields["preprocessing"]["input_size"] == list(size)


def test_tutorial_model_with_own_head_converts_and_runs_every_command(shared_data, tmp_path, capsys) -> None:
    """The Keras tutorial pattern: a MobileNetV2 backbone without its top, pooling, dropout, Dense(2)."""
    base = keras_model("MobileNetV2", alpha=0.35, input_shape=(96, 96, 3), include_top=False)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs))
    x = keras.layers.Dropout(0.2)(x)
    tutorial = keras.Model(inputs, keras.layers.Dense(2)(x))
    file = save(tutorial, tmp_path / "ants_bees.keras")
    out = tmp_path / "converted.pt"
    assert main(["convert", str(file), "--model", "mobilenet_v2", "-o", str(out), "--classes", "ants,bees"]) == 0
    assert "wrote" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["classes"] == ["ants", "bees"] and ckpt["kwargs"]["padding"] == "same"
    assert ckpt["kwargs"]["bn_eps"] == 1e-3 and ckpt["converted_from"]["format"] == "keras (keras)"
    model, _ = model_from_checkpoint(out)
    pixels = photos(shared_data, (96, 96))
    ref = keras.ops.convert_to_numpy(tutorial(pixels / 127.5 - 1.0, training=False))
    with torch.no_grad():
        got = model(lightnets_input(pixels, ckpt["preprocessing"])).numpy()
    assert np.abs(got - ref).max() <= TOL

    val = shared_data / "hymenoptera_data" / "val"
    assert main(["eval", str(out), str(val), "--out", str(tmp_path / "eval")]) == 0
    assert main(["predict", str(out), str(next((val / "bees").glob("*.jpg")))]) == 0
    printed = capsys.readouterr().out
    assert "ants" in printed or "bees" in printed
    pytest.importorskip("onnxruntime")
    assert main(["export", str(out), "-o", str(tmp_path / "m.onnx")]) == 0


@pytest.mark.slow
def test_fine_tuning_from_a_converted_checkpoint_keeps_its_architecture(shared_data, tmp_path) -> None:
    from lightnets.train import TrainConfig, train

    kmodel = keras_model("MobileNet", alpha=0.25, input_shape=(64, 64, 3), classes=2)
    file = save(kmodel, tmp_path / "v1.h5")
    out = tmp_path / "v1.pt"
    from_keras(file, "mobilenet_v1", out=out, classes=["ants", "bees"])
    cfg = TrainConfig(model="mobilenet_v1", data=str(shared_data / "hymenoptera_data"), weights=str(out),
                      epochs=1, batch_size=16, max_train_samples=32, input_size=64, workers=0, device="cpu",
                      out=str(tmp_path / "run"), progress=False)  # fmt: skip
    result = train(cfg)
    run_ckpt = load_checkpoint(Path(result.run_dir) / "last.pt")
    for key in ("padding", "stem_padding", "bn_eps", "act_layer", "width_mult"):
        assert run_ckpt["kwargs"][key] == load_checkpoint(out)["kwargs"][key], key


def test_wrong_family_and_other_files_fail_with_one_clear_line(tmp_path, capsys) -> None:
    v2 = save(keras_model("MobileNetV2", alpha=0.35, input_shape=(96, 96, 3)), tmp_path / "v2.keras")
    with pytest.raises(ConvertError, match=r"not a keras.applications mobilenet_v1 file: expected layer 'conv_pw_13'.*"
                                           r"it looks like mobilenet_v2"):  # fmt: skip
        from_keras(v2, "mobilenet_v1")
    small = save(keras_model("MobileNetV3Small", input_shape=(96, 96, 3)), tmp_path / "s.weights.h5")
    with pytest.raises(ConvertError, match="holds mobilenet_v3_small, not mobilenet_v3_large"):
        from_keras(small, "mobilenet_v3_large")
    odd_alpha = save(keras_model("MobileNet", alpha=0.6, input_shape=(96, 96, 3)), tmp_path / "a.h5")
    with pytest.raises(ConvertError, match="does not fit mobilenet_v1"):  # int(c * 0.6) is not make_divisible
        from_keras(odd_alpha, "mobilenet_v1")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    assert main(["convert", str(junk), "--model", "mobilenet_v2", "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err and "junk.h5" in err
    assert main(["convert", str(v2), "--model", "mobilenet_v1", "-o", str(tmp_path / "x.pt")]) == 2
    assert "expected layer 'conv_pw_13'" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
