"""IDX files (the MNIST family's format) and the Fashion-MNIST / MNIST loaders.

IDX layout (http://yann.lecun.com/exdb/mnist/): a 4-byte magic ``00 00 <dtype> <ndim>``, then
``ndim`` big-endian uint32 dimension sizes, then the data, row-major and big-endian. The file may be
gzip-compressed; we detect that from the gzip magic, not from the file name.

A file that does not follow the format — bad magic, unknown dtype code, fewer or more data bytes
than its dimensions promise, a broken gzip stream — raises :class:`DatasetError` naming the file and
the problem. Nothing is guessed: a truncated file is an error, not a shorter array.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from export.data.errors import DatasetError

#: IDX dtype code -> numpy dtype (big-endian, as stored on disk).
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: Per-pixel mean / std of the Fashion-MNIST training images after scaling to [0, 1].
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "CONVSERVE_FASHION_MNIST_DIR"

Split = Literal["train", "test"]
_SPLIT_PREFIX: dict[str, str] = {"train": "train", "test": "t10k"}
_GZIP_MAGIC = b"\x1f\x8b"


def parse_idx(data: bytes, source: str = "<bytes>") -> NDArray[Any]:
    """Decode the bytes of one (already decompressed) IDX file into a native-endian array.

    ``source`` only names the data in error messages.
    """
    if len(data) < 4:
        raise DatasetError(f"{source}: not an IDX file: {len(data)} bytes, shorter than the magic")
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise DatasetError(f"{source}: not an IDX file: magic {data[:4].hex()} must start 0000")
    if code not in IDX_DTYPES:
        raise DatasetError(f"{source}: unknown IDX dtype code 0x{code:02X}")
    if ndim == 0:
        raise DatasetError(f"{source}: IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual < expected:
        raise DatasetError(
            f"{source}: truncated IDX data: shape {dims} of {dtype.name} needs {expected} bytes, "
            f"file has {actual}"
        )
    if actual > expected:
        raise DatasetError(
            f"{source}: {actual - expected} trailing bytes after the IDX data of shape {dims}"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header_len, count=expected // dtype.itemsize)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path: Path | str) -> NDArray[Any]:
    """Read an IDX file, gzip-compressed or plain."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read IDX file: {exc.strerror or exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: corrupt or truncated gzip stream: {exc}") from exc
    return parse_idx(raw, source=str(path))


def write_idx(path: Path | str, array: NDArray[Any], *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzip it when ``compress`` (default: name ends in ``.gz``)."""
    path = Path(path)
    arr = np.asarray(array)
    code = _CODE_OF_KIND.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None or arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"cannot store dtype {arr.dtype} with {arr.ndim} dimensions as IDX")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    path.write_bytes(payload)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: missing {stem}(.gz)")


def load_idx_dataset(
    root: Path | str, split: Split = "train"
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Load an MNIST-layout split: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Works for MNIST, Fashion-MNIST and KMNIST alike.
    Returns ``(images uint8 N×H×W, labels int64 N)``.
    """
    if split not in _SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    root = Path(root)
    prefix = _SPLIT_PREFIX[split]
    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DatasetError(
            f"{images_path}: expected uint8 images N×H×W, got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DatasetError(
            f"{labels_path}: expected uint8 labels N, got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"{root}: {split} split has {len(images)} images but {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


def fashion_mnist_root(root: Path | str | None = None) -> Path:
    """Fashion-MNIST's directory: ``root``, else $CONVSERVE_FASHION_MNIST_DIR, else Debian's."""
    if root is not None:
        return Path(root)
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else DEFAULT_FASHION_MNIST_DIR


def load_fashion_mnist(
    split: Split = "train", root: Path | str | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Fashion-MNIST ``split`` as ``(images uint8 N×28×28, labels int64 N in 0..9)``."""
    directory = fashion_mnist_root(root)
    if not directory.is_dir():
        raise DatasetError(
            f"Fashion-MNIST not found at {directory}: run `apt-get install dataset-fashion-mnist` "
            f"or set {FASHION_MNIST_ENV} to a directory holding the IDX files"
        )
    try:
        images, labels = load_idx_dataset(directory, split)
    except DatasetError as exc:
        raise DatasetError(
            f"{exc} (Fashion-MNIST: `apt-get install dataset-fashion-mnist` or set "
            f"{FASHION_MNIST_ENV})"
        ) from exc
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{directory}: Fashion-MNIST images must be 28×28, got {images.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise DatasetError(f"{directory}: Fashion-MNIST labels outside 0..9")
    return images, labels
