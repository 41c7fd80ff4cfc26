"""The decode-once cache (lightnets.data.decode_cache): hits, invalidation, corruption, equality with decoding."""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets.data import ImageFolder, load_dataset, load_image, make_loader
from lightnets.data import decode_cache as dc
from lightnets.data.transforms import eval_transform, make_preprocessing, train_transform

PREP = make_preprocessing(
    "imagenet", 32
)  # resize_size 36: every photo below is shrunk, the tiny ones are not


def _noise(w: int, h: int, seed: int, chans: int = 3) -> np.ndarray:
    shape = (h, w, chans) if chans > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _mixed_folder(root: Path) -> Path:
    """Two classes of mixed sizes and modes: tiny, non-square, large, grayscale, RGBA, palette; one bad file."""
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    Image.fromarray(_noise(3, 2, 0)).save(root / "a" / "tiny.png")
    Image.fromarray(_noise(90, 30, 1)).save(root / "a" / "wide.png")
    Image.fromarray(_noise(40, 120, 2)).save(root / "a" / "tall.jpg", quality=90)
    Image.fromarray(_noise(300, 200, 3)).save(root / "a" / "large.jpg", quality=90)
    Image.fromarray(_noise(50, 50, 4, 1), "L").save(root / "b" / "gray.png")
    Image.fromarray(_noise(64, 48, 5, 4), "RGBA").save(root / "b" / "rgba.png")
    Image.fromarray(_noise(33, 35, 6)).convert("P").save(root / "b" / "palette.gif")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    return _mixed_folder(tmp_path / "data")


def _cached(root: Path, cache_dir: Path, prep=PREP, train: bool = False) -> ImageFolder:
    ds = ImageFolder(root, cache=dc.DecodeCache(str(cache_dir)))
    return ds.with_transform(train_transform(prep) if train else eval_transform(prep))


def _cache_file(cache_dir: Path) -> Path:
    (path,) = [p for p in cache_dir.iterdir() if p.suffix == ".lnc"]
    return path


def _built(caplog) -> int:
    return sum("decoding" in r.getMessage() and "once into" in r.getMessage() for r in caplog.records)


def test_second_open_hits_the_cache_and_reads_no_image_file(folder, tmp_path, caplog, monkeypatch) -> None:
    caplog.set_level("INFO", logger="lightnets.data.decode_cache")
    first = _cached(folder, tmp_path / "c")
    assert _built(caplog) == 1 and len(first.decoded) == 7  # the broken file is not stored
    second = _cached(folder, tmp_path / "c")
    assert _built(caplog) == 1
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pytest.fail("decoded a file"))
    items = [second[i] for i, (p, _) in enumerate(second.samples) if "broken" not in p]
    assert len(items) == 7 and not opened


def test_mixed_folder_decodes_identically_to_the_uncached_path(folder, tmp_path) -> None:
    plain = ImageFolder(folder).with_transform(eval_transform(PREP))
    for ds in (_cached(folder, tmp_path / "c"), _cached(folder, tmp_path / "c")):  # building, then reading
        assert ds.decoded is not None
        for i in range(len(ds)):
            a, b = plain[i], ds[i]
            if a is None:
                assert b is None
                continue
            assert a[1] == b[1] and torch.equal(a[0], b[0]), ds.samples[i][0]


def test_stored_pixels_are_the_working_resolution(folder, tmp_path) -> None:
    ds = _cached(folder, tmp_path / "c")
    for path, _ in ds.samples:
        img = ds.decoded.get(path)
        if "broken" in path:
            assert img is None
            continue
        full = load_image(path)
        assert min(img.size) == min(min(full.size), 36), path  # shrunk to the shorter side 36, never enlarged


def test_small_preset_training_transform_is_identical(folder, tmp_path) -> None:
    prep = make_preprocessing("small", 16, mean=[0.5] * 3, std=[0.25] * 3)
    plain = ImageFolder(folder).with_transform(train_transform(prep))
    cached = _cached(folder, tmp_path / "c", prep, train=True)
    for i in range(len(plain)):
        torch.manual_seed(i)
        a = plain[i]
        torch.manual_seed(i)
        b = cached[i]
        assert (a is None and b is None) or torch.equal(a[0], b[0])


def test_unreadable_file_is_still_reported_and_skipped(folder, tmp_path, caplog) -> None:
    ds = _cached(folder, tmp_path / "c")
    idx = next(i for i, (p, _) in enumerate(ds.samples) if "broken" in p)
    assert ds[idx] is None
    assert ds.skipped and "broken.jpg" in ds.skipped[0][0]
    assert any("skipping unreadable image" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("change", ["mtime", "size", "added", "removed"])
def test_changed_files_invalidate_and_unchanged_images_are_reused(folder, tmp_path, caplog, change) -> None:
    caplog.set_level("INFO", logger="lightnets.data.decode_cache")
    _cached(folder, tmp_path / "c")
    target = folder / "a" / "wide.png"
    if change == "mtime":
        st = target.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    elif change == "size":
        Image.fromarray(_noise(90, 31, 9)).save(target)
    elif change == "added":
        Image.fromarray(_noise(20, 20, 10)).save(folder / "b" / "new.png")
    else:
        target.unlink()
    caplog.clear()
    ds = _cached(folder, tmp_path / "c")
    assert _built(caplog) == 1 and any("files changed" in r.getMessage() for r in caplog.records)
    reused = 7 if change == "added" else 6  # only the changed or new file is decoded again
    assert any(f"({reused} reused)" in r.getMessage() for r in caplog.records)
    plain = ImageFolder(folder).with_transform(eval_transform(PREP))
    assert [s for s in ds.samples] == plain.samples
    for i in range(len(ds)):
        a, b = plain[i], ds[i]
        assert (a is None and b is None) or torch.equal(a[0], b[0])
    caplog.clear()
    _cached(folder, tmp_path / "c")
    assert _built(caplog) == 0


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    index_len = struct.unpack("<Q", data[-16:-8])[0]
    index_start = len(data) - 48 - index_len
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "bad header":
        data[:8] = b"NOTCACHE"
    elif how == "no completion marker":
        data = data[:-8]
    elif how == "index checksum":
        data[index_start + 5] ^= 0xFF
    elif how == "empty":
        data = bytearray()
    elif how == "other key":  # a well-formed file whose index says it was built with other preprocessing
        index = json.loads(bytes(data[index_start : index_start + index_len]))
        index["shape"]["size"] = 99
        raw = json.dumps(index).encode()
        import hashlib

        data = data[:index_start] + raw + dc._FOOTER.pack(hashlib.sha256(raw).digest(), len(raw), dc.DONE)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "how", ["truncated", "bad header", "no completion marker", "index checksum", "empty", "other key"]
)
def test_corrupt_cache_is_detected_and_rebuilt(folder, tmp_path, caplog, how) -> None:
    caplog.set_level("INFO", logger="lightnets.data.decode_cache")
    _cached(folder, tmp_path / "c")
    path = _cache_file(tmp_path / "c")
    good = path.read_bytes()
    _corrupt(path, how)
    if how != "other key":
        with pytest.raises(dc.CacheInvalid):
            dc.read_index(path)
    caplog.clear()
    ds = _cached(folder, tmp_path / "c")
    assert _built(caplog) == 1
    assert path.read_bytes() == good  # rebuilt to the same bytes
    plain = ImageFolder(folder).with_transform(eval_transform(PREP))
    for i in range(len(ds)):
        a, b = plain[i], ds[i]
        assert (a is None and b is None) or torch.equal(a[0], b[0])


def test_damaged_pixels_fail_their_checksum_and_are_decoded_from_the_file(folder, tmp_path, caplog) -> None:
    caplog.set_level("INFO", logger="lightnets.data.decode_cache")
    ds = _cached(folder, tmp_path / "c")
    path = _cache_file(tmp_path / "c")
    large = next(p for p, _ in ds.samples if "large" in p)
    offset = ds.decoded.entries[large][0]
    with open(path, "r+b") as f:  # flip pixel bytes; the index (and its checksum) stay valid
        f.seek(offset + 10)
        f.write(b"\x00\x01\x02\x03")
    fresh = _cached(folder, tmp_path / "c")  # the index is intact: opened without rebuilding
    i = next(i for i, (p, _) in enumerate(fresh.samples) if p == large)
    plain = ImageFolder(folder).with_transform(eval_transform(PREP))
    assert torch.equal(fresh[i][0], plain[i][0])
    assert any("fail their checksum" in r.getMessage() for r in caplog.records)
    assert not path.exists()  # removed, so the next open rebuilds
    caplog.clear()
    _cached(folder, tmp_path / "c")
    assert _built(caplog) == 1


def test_two_processes_building_at_once_both_get_a_valid_cache(folder, tmp_path) -> None:
    results, errors = [], []

    def open_one() -> None:
        try:
            results.append(_cached(folder, tmp_path / "c"))
        except Exception as e:  # pragma: no cover - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    assert [p.name for p in (tmp_path / "c").iterdir()] == [_cache_file(tmp_path / "c").name]  # no temp left
    plain = ImageFolder(folder).with_transform(eval_transform(PREP))
    for ds in results:
        for i in range(len(ds)):
            a, b = plain[i], ds[i]
            assert (a is None and b is None) or torch.equal(a[0], b[0])


def test_load_dataset_reads_from_the_cache_and_no_cache_turns_it_off(folder, tmp_path) -> None:
    splits = load_dataset(str(folder), val_fraction=0.25, cache_dir=tmp_path / "c")
    loader = make_loader(splits.train, batch_size=2, train=True, preprocessing=PREP)
    assert loader.dataset.decoded is not None and len(list(loader)) >= 1
    val = make_loader(splits.val, batch_size=2, train=False, preprocessing=PREP)
    assert val.dataset.decoded is not None
    assert len(list((tmp_path / "c").iterdir())) == 1  # train and val subsets share the folder's one cache
    off = load_dataset(str(folder), val_fraction=0.25, cache=False, cache_dir=tmp_path / "off")
    assert make_loader(off.train, batch_size=2, train=True, preprocessing=PREP).dataset.decoded is None
    assert not (tmp_path / "off").exists()


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("LIGHTNETS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dc.default_cache_dir() == tmp_path / "xdg" / "lightnets" / "decoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert dc.default_cache_dir() == Path.home() / ".cache" / "lightnets" / "decoded"
    monkeypatch.setenv("LIGHTNETS_CACHE_DIR", str(tmp_path / "mine"))
    assert dc.default_cache_dir() == tmp_path / "mine"


def test_dataset_with_cache_survives_pickling_for_spawned_workers(folder, tmp_path) -> None:
    import pickle

    ds = _cached(folder, tmp_path / "c")
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.decoded._mm is None  # the pickle carries the path, not the mapped pixels
    assert torch.equal(clone[0][0], ds[0][0])


def test_unwritable_cache_dir_falls_back_to_decoding(folder, tmp_path, caplog) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    ds = _cached(folder, blocker / "c")
    assert ds.decoded is None and any("decode cache unavailable" in r.getMessage() for r in caplog.records)
    plain = ImageFolder(folder).with_transform(eval_transform(PREP))
    assert torch.equal(ds[0][0], plain[0][0])


def test_stale_temporary_files_of_killed_builders_are_removed(folder, tmp_path) -> None:
    _cached(folder, tmp_path / "c")
    path = _cache_file(tmp_path / "c")
    old = tmp_path / "c" / f"{path.name}.dead.tmp"
    young = tmp_path / "c" / f"{path.name}.alive.tmp"
    old.write_bytes(b"partial")
    young.write_bytes(b"partial")
    os.utime(old, (1, 1))
    path.unlink()
    _cached(folder, tmp_path / "c")
    assert not old.exists() and young.exists()


@pytest.mark.parametrize("train", [False, True])
def test_loader_ships_uint8_and_normalises_per_batch_to_the_per_image_values(folder, tmp_path, train) -> None:
    """make_loader's workers send uint8 pixels and the loader scales / normalises each batch: the batches
    equal, bit for bit, the per-image float transform's tensors for the same images (same augmentation draw)."""
    from lightnets.data.tensor_steps import BatchNormalize

    ds = ImageFolder(folder, cache=dc.DecodeCache(str(tmp_path / "cache")))
    ds.scan()
    loader = make_loader(ds, batch_size=4, train=train, preprocessing=PREP, num_workers=0, seed=3)
    assert loader.batch_transform is not None and loader.dataset.transform.steps[-1].__class__.__name__ == "ToUint8Tensor"
    torch.manual_seed(7)
    batches = [b[0] for b in loader]
    assert all(b.dtype == torch.float32 for b in batches)
    per_image = ds.with_transform(train_transform(PREP) if train else eval_transform(PREP))
    torch.manual_seed(7)
    order = [i for plan in loader._plans() for i in plan.indices.tolist()]
    expected = torch.stack([per_image[i][0] for i in order])
    assert torch.equal(torch.cat(batches), expected)
    with pytest.raises(TypeError, match="uint8"):
        BatchNormalize(PREP)(expected)
