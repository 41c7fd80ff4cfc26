"""Property-based tests: images of any size (1-300 px a side, non-square) in any Pillow mode (1, L, LA, P, PA,
RGB, RGBA, CMYK, I;16, I, F) go through mode conversion, the eval / train transforms, decoding from a file and
both loaders without an exception or a numpy warning, and come out with the right shape, dtype and range.

Pixel data comes from a numpy generator seeded by Hypothesis (fast), with NaN and +-inf mixed into float
images; example counts are kept small so the file runs in seconds.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from lightnets.data import ImageFolder, TensorBatchLoader, load_image, make_loader, resize_batch
from lightnets.data.transforms import convert_image_mode, eval_transform, make_preprocessing, train_transform

MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
# a file format that stores each mode as that mode (Pillow), for the decode-from-disk property
FILE_FORMAT = {"1": "PNG", "L": "PNG", "LA": "PNG", "P": "PNG", "PA": "TIFF", "RGB": "JPEG", "RGBA": "PNG",
               "CMYK": "JPEG", "I;16": "PNG", "I": "TIFF", "F": "TIFF"}  # fmt: skip
_BANDS = {"L": 1, "LA": 2, "P": 1, "PA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}

side = st.integers(1, 300)
target = st.integers(1, 64)
CHECKS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_MODE = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # x 11 modes


def make_image(mode: str, width: int, height: int, seed: int, specials: bool = False) -> Image.Image:
    rng = np.random.default_rng(seed)
    size = (width, height)
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (height, width)).astype(bool))
    if mode in _BANDS:
        data = rng.integers(0, 256, (height, width, _BANDS[mode]), dtype=np.uint8)
        img = Image.frombytes(mode, size, data.tobytes())
        if mode == "P":
            img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
            if specials:
                img.info["transparency"] = int(rng.integers(0, 256))
        return img
    if mode == "I;16":
        return Image.frombytes(mode, size, rng.integers(0, 65536, (height, width)).astype("<u2").tobytes())
    if mode == "I":
        lo, hi = sorted(int(v) for v in rng.integers(-(2**31), 2**31, 2))
        return Image.frombytes(mode, size, rng.integers(lo, hi + 1, (height, width)).astype("<i4").tobytes())
    arr = rng.normal(0, 10.0 ** int(rng.integers(-3, 6)), (height, width)).astype("<f4")
    if specials:
        flat = arr.reshape(-1)
        for value in (np.nan, np.inf, -np.inf):
            flat[rng.integers(0, flat.size)] = value
    return Image.frombytes("F", size, arr.tobytes())


@pytest.mark.parametrize("mode", MODES)
@PER_MODE
@given(
    w=side, h=side, seed=st.integers(0, 2**32 - 1), specials=st.booleans(), to=st.sampled_from(["RGB", "L"])
)
def test_convert_any_mode(mode: str, w: int, h: int, seed: int, specials: bool, to: str) -> None:
    img = make_image(mode, w, h, seed, specials)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow / NaN cast on the way
        out = convert_image_mode(img, to)
    assert out.mode == to and out.size == (w, h)
    arr = np.asarray(out)
    assert arr.dtype == np.uint8 and arr.shape[:2] == (h, w)
    if mode in ("I", "F", "I;16") and to == "L":
        # rescaling keeps the order of the (finite) values: brighter in, never darker out
        src = np.asarray(img, dtype=np.float64).reshape(-1)
        dst = arr.reshape(-1).astype(np.int64)
        keep = np.isfinite(src)
        order = np.argsort(src[keep], kind="stable")
        assert np.all(np.diff(dst[keep][order]) >= 0)


def _expected_range(pre: dict) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(pre["mean"]).view(-1, 1, 1), torch.tensor(pre["std"]).view(-1, 1, 1)
    return (0 - mean) / std - 1e-5, (1 - mean) / std + 1e-5


@CHECKS
@given(mode=st.sampled_from(MODES), w=side, h=side, seed=st.integers(0, 2**32 - 1),
       preset=st.sampled_from(["imagenet", "small"]), th=target, tw=target, in_chans=st.sampled_from([1, 3]),
       train=st.booleans())  # fmt: skip
def test_transforms_any_size_and_mode(
    mode: str, w: int, h: int, seed: int, preset: str, th: int, tw: int, in_chans: int, train: bool
) -> None:
    pre = make_preprocessing(preset, (th, tw), in_chans=in_chans)
    if train:
        transform = train_transform(pre, generator=torch.Generator().manual_seed(seed))
    else:
        transform = eval_transform(pre)
    x = transform(make_image(mode, w, h, seed, specials=True))
    assert x.shape == (in_chans, th, tw) and x.dtype == torch.float32
    lo, hi = _expected_range(pre)
    assert torch.isfinite(x).all() and (x >= lo).all() and (x <= hi).all()


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=side, h=side, seed=st.integers(0, 2**32 - 1), to=st.sampled_from(["RGB", "L"]))
def test_decode_any_mode_from_a_file(mode: str, w: int, h: int, seed: int, to: str) -> None:
    fmt = FILE_FORMAT[mode]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"img.{fmt.lower()}"
        make_image(mode, w, h, seed).save(path, fmt)
        with Image.open(path) as raw:
            assert raw.mode == mode or fmt == "JPEG" and mode == "RGB"
        out = load_image(path, to)
    assert out.mode == to and out.size == (w, h)


@CHECKS
@given(n=st.integers(1, 9), c=st.sampled_from([1, 3]), h=st.integers(1, 40), w=st.integers(1, 40),
       th=target, tw=target, preset=st.sampled_from(["small", "imagenet"]), augment=st.booleans(),
       batch=st.integers(1, 4), seed=st.integers(0, 2**31))  # fmt: skip
def test_tensor_loader_any_size(
    n: int, c: int, h: int, w: int, th: int, tw: int, preset: str, augment: bool, batch: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, c, h, w), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, 3, n))
    pre = make_preprocessing(preset, (th, tw), in_chans=c)
    loader = TensorBatchLoader(
        images, labels, batch, shuffle=True, seed=seed, augment=augment, preprocessing=pre
    )
    seen = []
    lo, hi = _expected_range(pre)
    for x, y in loader:
        assert x.shape == (len(y), c, th, tw) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.isfinite(x).all() and (x >= lo).all() and (x <= hi).all()
        seen += y.tolist()
    assert sorted(seen) == sorted(labels.tolist())  # every sample exactly once
    direct = resize_batch(images.float() / 255, pre)
    assert direct.shape == (n, c, th, tw)


@CHECKS
@given(s=st.integers(1, 40), th=target, tw=target, c=st.sampled_from([1, 3]), seed=st.integers(0, 2**31))
def test_tensor_and_pil_centre_crops_agree(s: int, th: int, tw: int, c: int, seed: int) -> None:
    # an s x s image needs no resize (shorter side already resize_size), only the crop, padded where the crop
    # is wider or taller: the batched tensor path must place the padding exactly as the PIL path does
    assume(min(th, tw) <= s)
    pre = make_preprocessing("imagenet", (th, tw), resize_size=s, in_chans=c)
    arr = np.random.default_rng(seed).integers(0, 256, (s, s, c), dtype=np.uint8)
    pil = eval_transform(pre)(Image.fromarray(arr[..., 0] if c == 1 else arr))
    batch = resize_batch(torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255, pre)[0]
    mean, std = torch.tensor(pre["mean"]).view(-1, 1, 1), torch.tensor(pre["std"]).view(-1, 1, 1)
    assert batch.shape == pil.shape == (c, th, tw)
    torch.testing.assert_close((batch - mean) / std, pil, atol=1e-5, rtol=0)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.tuples(st.sampled_from(MODES), st.integers(1, 120), st.integers(1, 120)), min_size=2,
                      max_size=6),
       th=st.integers(1, 40), tw=st.integers(1, 40), in_chans=st.sampled_from([1, 3]), train=st.booleans())  # fmt: skip
def test_folder_loader_any_files(files: list, th: int, tw: int, in_chans: int, train: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i, (mode, w, h) in enumerate(files):
            cls = root / ("a" if i % 2 else "b")
            cls.mkdir(exist_ok=True)
            fmt = FILE_FORMAT[mode]
            make_image(mode, w, h, i).save(cls / f"{i}.{fmt.lower()}", fmt)
        ds = ImageFolder(root, mode="RGB" if in_chans == 3 else "L")
        pre = make_preprocessing("small" if train else "imagenet", (th, tw), in_chans=in_chans)
        loader = make_loader(ds, batch_size=3, train=train, preprocessing=pre, drop_last=False)
        total = 0
        for x, y in loader:
            assert x.shape == (len(y), in_chans, th, tw) and torch.isfinite(x).all()
            total += len(y)
    assert total == len(files)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_at_one_pixel(mode: str) -> None:
    # the smallest image there is, through every preset
    img = make_image(mode, 1, 1, 0, specials=True)
    for preset in ("imagenet", "small"):
        for chans in (1, 3):
            pre = make_preprocessing(preset, 7, in_chans=chans)
            assert eval_transform(pre)(img).shape == (chans, 7, 7)
            assert train_transform(pre)(img).shape == (chans, 7, 7)
