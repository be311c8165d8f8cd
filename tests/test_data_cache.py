"""The decode-once cache: reuse, stale and truncated caches rebuilt, concurrent builders, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_trees import write_imagefolder, write_jpeg

from ktg.data import ImageSet, cache
from ktg.data.cache import ImageList, cached_image_set, default_cache_dir, stored_size
from ktg.errors import KTGError


def image_list(root: Path) -> ImageList:
    files = sorted(path.relative_to(root).as_posix() for path in (root / "train").rglob("*.jpg"))
    labels = [int(file.split("/")[1].split("_")[1]) for file in files]
    return ImageList(root, files, labels, ["class_0", "class_1", "class_2"], "a test list")


@pytest.fixture
def tree(tmp_path: Path) -> ImageList:
    return image_list(write_imagefolder(tmp_path / "data", per_class=4))


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the images decoded (the cache calls ``decode_photo_file`` once per image it builds)."""
    calls: list[str] = []
    real = cache.decode_photo_file

    def counting(path, side):
        calls.append(str(path))
        return real(path, side)

    monkeypatch.setattr(cache, "decode_photo_file", counting)
    return calls


def pictures(images: ImageSet) -> list[torch.Tensor]:
    """Every image of the set as C×H×W uint8."""
    return [images.images.image(i) for i in range(len(images))]


def same_pictures(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def cache_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


def test_cache_is_built_once_then_reused(tmp_path: Path, tree: ImageList, decodes: list[str]) -> None:
    first = cached_image_set("demo", "train", tree, 24, tmp_path / "cache")
    # write_jpeg's images are 40-68 pixels: the cache reduces them to 24 on the shorter side, aspect kept.
    assert len(decodes) == 12 and len(first) == 12 and first.name == "demo/train"
    assert first.images.sizes.tolist() == [list(stored_size(tuple(size), 24)) for size in first.original_sizes.tolist()]
    assert first.images.sizes.min(dim=1).values.eq(24).all() and first.images.sizes.max() > 24
    again = cached_image_set("demo", "train", tree, 24, tmp_path / "cache")
    assert len(decodes) == 12  # nothing decoded the second time
    assert same_pictures(pictures(first), pictures(again))
    assert torch.equal(first.original_sizes, again.original_sizes)
    assert torch.equal(again.labels, torch.tensor(tree.labels))
    names = cache_files(tmp_path / "cache")
    assert [name.rsplit(".", 1)[1] for name in names] == ["json", "lock", "npy"]
    # The pixels are a read-only mapping of the cache file: processes that load the split share its pages.
    pixels = again.images.pixels
    assert isinstance(pixels, np.memmap) and not pixels.flags.writeable
    assert Path(pixels.filename) == next((tmp_path / "cache").rglob("*.npy"))
    assert names[0].startswith("train-24px-")
    whole = cached_image_set("demo", "train", tree, 100, tmp_path / "cache")  # another side is another cache
    assert len(decodes) == 24
    assert torch.equal(whole.images.sizes, whole.original_sizes)  # never enlarged: stored as they are
    decoded, _ = cache.decode_photo_file(tree.root / tree.files[0], 100)
    assert torch.equal(whole.images.image(0), torch.tensor(decoded).permute(2, 0, 1))


def test_stale_caches_are_rebuilt(tmp_path: Path, tree: ImageList, decodes: list[str]) -> None:
    before = pictures(cached_image_set("demo", "train", tree, 24, tmp_path / "cache"))
    write_jpeg(tree.root / tree.files[0], 2, 99)  # the image was replaced (a different size in bytes)
    after = pictures(cached_image_set("demo", "train", tree, 24, tmp_path / "cache"))
    assert len(decodes) == 24 and not same_pictures(before[:1], after[:1])
    assert same_pictures(before[1:], after[1:])
    relabelled = ImageList(tree.root, tree.files, [2 - label for label in tree.labels], tree.classes, tree.source)
    cached_image_set("demo", "train", relabelled, 24, tmp_path / "cache")
    assert len(decodes) == 36
    os.utime(tree.root / tree.files[3], ns=(0, 10**18))  # rewritten in place with the same size
    cached_image_set("demo", "train", relabelled, 24, tmp_path / "cache")
    assert len(decodes) == 48
    assert len(cache_files(tmp_path / "cache")) == 3  # rebuilt in place, not beside the stale one


DAMAGES = ["truncate array", "delete array", "garble sidecar", "empty sidecar", "delete sidecar", "resize sidecar"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_caches_are_rebuilt(tmp_path: Path, tree: ImageList, decodes: list[str], damage: str) -> None:
    good = pictures(cached_image_set("demo", "train", tree, 24, tmp_path / "cache"))
    array = next((tmp_path / "cache").rglob("*.npy"))
    target = array if damage.endswith("array") else array.with_suffix(".json")
    if damage.startswith("truncate"):
        os.truncate(target, target.stat().st_size - 100)
    elif damage.startswith("garble"):
        target.write_text("{not json")
    elif damage.startswith("empty"):
        target.write_text("[]")
    elif damage.startswith("resize"):  # the sizes no longer add up to the array's length
        meta = json.loads(target.read_text())
        meta["stored_sizes"][0] = [1, 1]
        target.write_text(json.dumps(meta))
    else:
        target.unlink()
    rebuilt = cached_image_set("demo", "train", tree, 24, tmp_path / "cache")
    assert len(decodes) == 24 and same_pictures(pictures(rebuilt), good)


def test_a_failed_build_leaves_nothing_half_written(tmp_path: Path, tree: ImageList) -> None:
    (tree.root / tree.files[5]).write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    message = f"demo: cannot decode {tree.root / tree.files[5]} \\(train split, listed in a test list\\)"
    with pytest.raises(KTGError, match=message):
        cached_image_set("demo", "train", tree, 24, tmp_path / "cache")
    assert [name.rsplit(".", 1)[1] for name in cache_files(tmp_path / "cache")] == ["lock"]


def test_an_empty_split_is_an_error(tmp_path: Path, tree: ImageList) -> None:
    empty = ImageList(tree.root, [], [], tree.classes, "an empty list")
    with pytest.raises(KTGError, match="demo: an empty list lists no images for the test split"):
        cached_image_set("demo", "test", empty, 24, tmp_path / "cache")


def test_leftovers_of_a_killed_builder_are_removed(tmp_path: Path, tree: ImageList) -> None:
    cached_image_set("demo", "train", tree, 24, tmp_path / "cache")
    array = next((tmp_path / "cache").rglob("*.npy"))
    leftover = array.with_name(f".{array.name}.abc123.tmp")
    leftover.write_bytes(b"partial")
    array.unlink()
    cached_image_set("demo", "train", tree, 24, tmp_path / "cache")
    assert not leftover.exists() and array.exists()


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KTG_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env" and default_cache_dir(tmp_path / "opt") == tmp_path / "opt"
    monkeypatch.delenv("KTG_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "ktg"


BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_data_cache import image_list
    from ktg.data import cache

    real = cache.decode_photo_file
    def slow(path, side):
        time.sleep(0.02)  # so that the two builders overlap
        return real(path, side)
    cache.decode_photo_file = slow
    real_build = cache._build
    def logged_build(*args):
        with open({log!r}, "a") as log:
            log.write("built\\n")
        real_build(*args)
    cache._build = logged_build

    Path({ready!r} + sys.argv[1]).touch()
    while not Path({go!r}).exists():
        time.sleep(0.01)
    images = cache.cached_image_set("demo", "train", image_list(Path({root!r})), 24, {cache_dir!r})
    print(int(images.images.pixels.astype("int64").sum()))
""")


def test_two_processes_building_at_once_share_one_cache(tmp_path: Path, tree: ImageList) -> None:
    script = tmp_path / "builder.py"
    script.write_text(BUILDER.format(tests=str(Path(__file__).parent), log=str(tmp_path / "log"),
                                     ready=str(tmp_path / "ready"), go=str(tmp_path / "go"),
                                     root=str(tree.root), cache_dir=str(tmp_path / "cache")))
    processes = [subprocess.Popen([sys.executable, str(script), str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for i in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), processes[0].stderr.read()
        time.sleep(0.05)
    (tmp_path / "go").touch()
    results = [process.communicate(timeout=60) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    assert results[0][0] == results[1][0]  # both see the same pixels
    assert (tmp_path / "log").read_text() == "built\n"  # the second waited for the first and reused its cache
    assert [name.rsplit(".", 1)[1] for name in cache_files(tmp_path / "cache")] == ["json", "lock", "npy"]
    pixels = np.load(next((tmp_path / "cache").rglob("*.npy")))
    assert int(pixels.astype(np.int64).sum()) == int(results[0][0])
