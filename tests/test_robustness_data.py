"""Bad input on disk: a dataset folder with every kind of file that goes wrong in practice, checked with
``check_data`` / ``lightnets check-data`` and trained on for real, which must skip (and list) exactly the bad
files.

Unreadable files: tests may run as root, for whom ``chmod 000`` changes nothing.  The ``deny_read`` fixture then
makes the file unreadable another way, by patching ``builtins.open`` (what Pillow opens files with) to raise
PermissionError(EACCES) for that path; as another user the chmod alone does it.  A FIFO named ``pipe.jpg`` is
a second unreadable file that needs no simulation.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightnets import cli
from lightnets.data import ImageFolder, check_image, load_image, load_split, save_split
from lightnets.data.checks import check_data
from lightnets.train import TrainConfig, train


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # the tiny models here gain nothing from more threads, and on a busy machine OpenMP threads competing for
    # the cores make a training step many times slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# =========================================================================== building a messy folder


def _noise(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A ~70-byte PNG whose header declares width x height RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _good_files(d: Path, kinds: list[str], seed: int) -> list[Path]:
    """One small image per kind (the awkward-but-valid cases)."""
    out = []
    for i, kind in enumerate(kinds):
        s = seed + i
        if kind == "rgb":
            p = d / "photo 1.jpg"
            Image.fromarray(_noise(20, 14, s)).save(p, quality=95)
        elif kind == "gray":
            p = d / "ñandú gris.png"
            Image.fromarray(_noise(9, 13, s, 1)).save(p)
        elif kind == "palette_alpha":
            p = d / "palette.png"
            im = Image.fromarray(_noise(12, 12, s, 1) % 4).convert("P")
            im.putpalette([0, 0, 0, 200, 30, 30, 30, 200, 30, 30, 30, 200])
            im.save(p, transparency=0)
        elif kind == "gray16":
            p = d / "deep.png"
            Image.fromarray(_noise(10, 8, s, 1).astype(np.uint16) * 257).save(p)
        elif kind == "cmyk":
            p = d / "print.jpg"
            Image.frombytes("CMYK", (16, 16), _noise(16, 16, s, 4).tobytes()).save(p, quality=95)
        elif kind == "exif":
            p = d / "rotated.jpg"
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
            Image.fromarray(_noise(30, 10, s)).save(p, exif=exif)
        elif kind == "animated":
            p = d / "anim.gif"
            frames = [Image.fromarray(_noise(11, 11, s + k)) for k in range(3)]
            frames[0].save(p, save_all=True, append_images=frames[1:], duration=40, loop=0)
        elif kind == "rgba":
            p = d / "alpha.png"
            Image.fromarray(_noise(10, 10, s, 4)).save(p)
        elif kind == "webp":
            p = d / "pic.webp"
            Image.fromarray(_noise(10, 10, s)).save(p)
        elif kind == "bmp":
            p = d / "pic.bmp"
            Image.fromarray(_noise(10, 7, s)).save(p)
        elif kind == "tiff":
            p = d / "pic.TIFF"
            Image.fromarray(_noise(7, 10, s)).save(p)
        elif kind == "bilevel":
            p = d / "ink.png"
            Image.fromarray(_noise(15, 9, s, 1) > 127).save(p)
        else:  # pragma: no cover
            raise AssertionError(kind)
        out.append(p)
    return out


def _truncated_jpeg(path: Path) -> None:
    full = Image.fromarray(_noise(64, 64, 99))
    full.save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # header intact, scan data cut off


CAT = "été chat"  # a class name with non-ASCII letters and a space
CAT_KINDS = ["rgb", "gray", "palette_alpha", "gray16", "cmyk", "exif"]
DOG_KINDS = ["animated", "rgba", "webp", "bmp", "tiff", "bilevel"]


def build_messy_folder(root: Path) -> dict[str, Path]:
    """root/{été chat, dog, empty}: 6 good images each in two classes, an empty class, and every bad case.
    Returns name -> path of the bad files and links."""
    cat, dog = root / CAT, root / "dog"
    for d in (cat, dog, root / "empty"):
        d.mkdir(parents=True)
    _good_files(cat, CAT_KINDS, 0)
    _good_files(dog, DOG_KINDS, 10)
    bad = {
        "truncated": cat / "cut off.jpg",
        "zero": cat / "empty.jpg",
        "text": cat / "notes.jpg",
        "bomb": dog / "bomb.png",
        "unreadable": dog / "locked.jpg",
        "fifo": dog / "pipe.jpg",
        "link_loop_file": dog / "self.jpg",
    }
    _truncated_jpeg(bad["truncated"])
    bad["zero"].write_bytes(b"")
    bad["text"].write_text("these are my notes, not a picture\n")
    _png_declaring(bad["bomb"], 100_000, 100_000)
    Image.fromarray(_noise(8, 8, 5)).save(bad["unreadable"])
    bad["unreadable"].chmod(0)
    os.mkfifo(bad["fifo"])
    os.symlink("self.jpg", bad["link_loop_file"])  # a link to itself: ELOOP on open
    links = {"loop_to_root": cat / "loop", "loop_to_self": dog / "again"}
    os.symlink("..", links["loop_to_root"])  # would pull every class into this one, forever
    os.symlink(".", links["loop_to_self"])
    (dog / "README.txt").write_text("ignored: not an image extension")
    return {**bad, **links}


EXPECT_REASON = {
    "truncated": "truncated",
    "zero": "empty file",
    "text": "not an image Pillow can identify",
    "bomb": "decompression bomb",
    "unreadable": "Permission denied",
    "fifo": "not a regular file",
    "link_loop_file": "Too many levels of symbolic links",
}


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("messy") / "data"
    return root, build_messy_folder(root)


@pytest.fixture()
def deny_read(monkeypatch, messy):
    """Make dog/locked.jpg unreadable for this test even as root (see the module docstring)."""
    target = os.path.realpath(messy[1]["unreadable"])
    try:
        with open(target, "rb"):
            readable = True  # root ignores the chmod 000
    except PermissionError:
        readable = False
    if readable:
        real_open = builtins.open

        def guarded_open(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(file) == target:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", guarded_open)
    return target


# =========================================================================== check_data


def test_check_data_reports_every_problem_at_once(messy, deny_read) -> None:
    root, bad = messy
    report = check_data(root)
    counts = {c.name: (c.good, c.bad) for c in report.classes}
    assert counts == {CAT: (6, 3), "dog": (6, 4), "empty": (0, 0)}
    reasons = dict(report.problems)
    assert set(reasons) == {str(bad[k]) for k in EXPECT_REASON}
    for key, expected in EXPECT_REASON.items():
        assert expected in reasons[str(bad[key])], (key, reasons[str(bad[key])])
    text = "\n".join(report.warnings)
    assert "'empty' is empty" in text
    assert f"symlink loop: {bad['loop_to_root']}" in text and f"symlink loop: {bad['loop_to_self']}" in text
    assert len(report.warnings) == 3 and not report.ok
    assert report.ignored == [str(root / "dog" / "README.txt")]


def test_quick_check_finds_the_same_bad_files(messy, deny_read) -> None:
    # headers only, except a full decode of JPEGs that lack their end marker and of GIF/BMP/TIFF files
    root, bad = messy
    quick = check_data(root, full_decode=False)
    assert {p for p, _ in quick.problems} == {str(bad[k]) for k in EXPECT_REASON}
    assert "truncated" in dict(quick.problems)[str(bad["truncated"])]


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "PNG", "JPEG", "WEBP"])
def test_cheap_check_catches_truncation_in_every_format(tmp_path: Path, fmt: str) -> None:
    # Pillow's verify() alone misses cut-off JPEG, GIF, BMP and TIFF data
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(_noise(48, 48, 1)).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])
    assert check_image(path) is not None
    assert check_image(path, full_decode=True) is not None


def test_valid_jpeg_with_bytes_after_its_end_marker_is_good(tmp_path: Path) -> None:
    path = tmp_path / "trailer.jpg"
    Image.fromarray(_noise(32, 32, 2)).save(path)
    path.write_bytes(path.read_bytes() + b"\0" * 100)  # some cameras append data after EOI
    assert check_image(path) is None


def test_image_folder_sees_what_check_data_sees(messy, deny_read) -> None:
    # the loops are cut (no file twice, no other class pulled in), the bad files are listed, not dropped
    root, bad = messy
    ds = ImageFolder(root)
    assert ds.classes == ["dog", "empty", CAT]  # sorted by code point
    paths = [p for p, _ in ds.samples]
    assert len(paths) == len(set(paths)) == 6 + 3 + 6 + 4
    assert not any("loop" in p or "again" in p for p in paths)
    report = check_data(root)
    by_class = {c: {p for p, t in ds.samples if ds.classes[t] == c} for c in ds.classes}
    problem_paths = {p for p, _ in report.problems}
    for c in report.classes:
        assert len(by_class[c.name]) == c.total
        assert len(by_class[c.name] & problem_paths) == c.bad
    assert {p for p, _ in ds.scan(check=True)} == problem_paths


def test_odd_but_valid_images_decode_to_the_model_mode(messy) -> None:
    root, _ = messy
    good_stems = {
        "photo 1",
        "ñandú gris",
        "palette",
        "deep",
        "print",
        "rotated",
        "anim",
        "alpha",
        "pic",
        "ink",
    }
    good = [
        p for p in sorted((root / CAT).iterdir()) + sorted((root / "dog").iterdir()) if p.stem in good_stems
    ]
    assert len(good) == 12
    for path in good:
        for mode in ("RGB", "L"):
            img = load_image(path, mode)
            assert img.mode == mode and min(img.size) > 0, path
    assert load_image(root / CAT / "rotated.jpg").size == (10, 30)  # EXIF orientation applied


def _class_tree(root: Path, spec: dict[str, int], seed: int = 0) -> None:
    for i, (name, n) in enumerate(spec.items()):
        (root / name).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(_noise(8, 8, seed + 10 * i + k)).save(root / name / f"{k}.png")


def test_single_class_and_loose_images_are_reported(tmp_path: Path) -> None:
    _class_tree(tmp_path, {"only": 3})
    Image.fromarray(_noise(8, 8)).save(tmp_path / "stray.png")
    report = check_data(tmp_path)
    assert [(c.name, c.good) for c in report.classes] == [("only", 3)]
    text = " | ".join(report.warnings)
    assert "only one class ('only')" in text
    assert "1 image file(s) directly in" in text and "stray.png" in text
    assert not report.ok and not report.problems


def test_class_with_only_bad_files(tmp_path: Path) -> None:
    _class_tree(tmp_path, {"a": 2, "b": 0})
    (tmp_path / "b" / "x.jpg").write_bytes(b"")
    (tmp_path / "b" / "y.png").write_text("no")
    report = check_data(tmp_path)
    assert {c.name: (c.good, c.bad) for c in report.classes} == {"a": (2, 0), "b": (0, 2)}
    assert "class 'b' has no readable image (all 2 are bad)" in report.warnings


def test_split_layout_and_val_class_missing_from_train(tmp_path: Path) -> None:
    _class_tree(tmp_path / "train", {"a": 2, "b": 2})
    _class_tree(tmp_path / "val", {"a": 1, "c": 1})
    report = check_data(tmp_path)
    assert [(c.split, c.name, c.good) for c in report.classes] == [
        ("train", "a", 2), ("train", "b", 2), ("val", "a", 1), ("val", "c", 1),
    ]  # fmt: skip
    assert any("val has class folders that train lacks: ['c']" in w for w in report.warnings)
    assert "split" in report.to_table().splitlines()[1]


def test_same_file_under_two_classes(tmp_path: Path) -> None:
    _class_tree(tmp_path, {"a": 2, "b": 1})
    os.symlink(tmp_path / "a" / "0.png", tmp_path / "b" / "also.png")
    report = check_data(tmp_path)
    assert any("also.png is the same file as one in 'a'" in w for w in report.warnings)


def test_no_class_folders(tmp_path: Path) -> None:
    report = check_data(tmp_path)
    assert report.classes == [] and any("no class subfolders" in w for w in report.warnings)


def test_unreadable_class_subfolder(tmp_path: Path, monkeypatch) -> None:
    _class_tree(tmp_path, {"a": 2, "b": 2})
    hidden = tmp_path / "b" / "sub"
    hidden.mkdir()
    Image.fromarray(_noise(8, 8)).save(hidden / "x.png")
    real_scandir = os.scandir

    def scandir(path=".", *args):  # as root a chmod 000 folder stays listable, so refuse it here
        if os.fspath(path) == os.fspath(hidden):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path, *args)

    hidden.chmod(0)
    try:
        monkeypatch.setattr(os, "scandir", scandir)
        report = check_data(tmp_path)
    finally:
        hidden.chmod(0o755)
    assert {c.name: c.good for c in report.classes} == {"a": 2, "b": 2}
    assert any(f"cannot list folder {hidden}: Permission denied" in w for w in report.warnings)


def test_threads_give_the_same_report(messy, deny_read) -> None:
    root, _ = messy
    one, two = check_data(root), check_data(root, workers=2)
    assert one.to_dict() == two.to_dict()


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    # Latin-1 bytes in a file name (old archives): listed, decoded, printed as \xe9, and a split file that
    # records such names reads back to the same names
    _class_tree(tmp_path, {"a": 2, "b": 2})
    os.rename(tmp_path / "a" / "0.png", os.fsencode(tmp_path / "a") + b"/caf\xe9.png")
    report = check_data(tmp_path)
    assert report.ok and report.good == 4
    ds = ImageFolder(tmp_path)
    names = ds.relative_paths()
    assert "a/caf\udce9.png" in names
    split = tmp_path.parent / f"{tmp_path.name}-split.json"
    save_split(split, [0, 1], [2, 3], num_samples=4, files=names)
    assert load_split(split, num_samples=4, files=names) == ([0, 1], [2, 3])
    bad = tmp_path / "b" / "caf\udce9 cut.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n")
    table = check_data(tmp_path).to_table()
    assert "caf\\xe9 cut.png" in table
    table.encode("utf-8")  # printable on a strict UTF-8 terminal


# =========================================================================== the command line


def test_cli_check_data_table_and_exit_status(messy, deny_read, capsys) -> None:
    root, bad = messy
    assert cli.main(["check-data", str(root)]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0] if not line.startswith(CAT) else CAT: line.split()[-2:] for line in out.splitlines()
            if line.startswith((CAT, "dog ", "empty ", "total "))}  # fmt: skip
    assert rows == {CAT: ["6", "3"], "dog": ["6", "4"], "empty": ["0", "0"], "total": ["12", "7"]}
    for key, reason in EXPECT_REASON.items():
        assert f"{bad[key]}: " in out and reason in out
    assert "3 warning(s)" in out and out.rstrip().endswith("problems found")

    assert cli.main(["check-data", str(root), "--format", "json", "--quick"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["bad"] == 7 and doc["good"] == 12 and len(doc["warnings"]) == 3


def test_cli_check_data_clean_folder_and_missing_folder(tmp_path: Path, capsys) -> None:
    _class_tree(tmp_path / "clean", {"a": 2, "b": 2})
    assert cli.main(["check-data", str(tmp_path / "clean")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")
    assert cli.main(["check-data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0] and "nowhere" in err[0]


# =========================================================================== training on it


def test_training_skips_bad_files_and_lists_them(messy, deny_read, tmp_path: Path) -> None:
    root, bad = messy
    out = tmp_path / "run"
    cfg = TrainConfig(model="shufflenet_v2_x0_5", data=str(root), out=str(out), epochs=1, batch_size=4,
                      input_size=32, workers=0, progress=False, val_fraction=0.2, seed=0)  # fmt: skip
    lines: list[str] = []
    result = train(cfg, log_fn=lines.append)
    listed = dict(
        line.split("\t", 1) for line in (out / "skipped.txt").read_text(encoding="utf-8").splitlines()
    )
    assert set(listed) == {str(bad[k]) for k in EXPECT_REASON}
    for key, expected in EXPECT_REASON.items():
        assert expected in listed[str(bad[key])]
    assert sorted(result.skipped) == sorted(listed.items())
    assert any("skipped 7 unreadable file(s)" in line for line in lines)
    assert json.loads((out / "classes.json").read_text()) == ["dog", "empty", CAT]
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 2
