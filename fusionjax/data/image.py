"""Image files (PNG, JPEG, ... via Pillow) and the MNIST IDX format."""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from fusionjax.errors import DataError, capped

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

# An image is refused above this many pixels, from its header, before it is decoded.
# 64 megapixels (e.g. 8000 x 8000) is far above anything this framework reads: MNIST-style
# digits are 28 x 28 (80,000 times fewer) and a 48-megapixel phone photo still fits.  Decoding
# one at the limit needs ~200 MB (RGB) and ~800 MB as float32 without `size`; a file that
# claims more is a decompression bomb or corrupt.  It is also below Pillow's own
# MAX_IMAGE_PIXELS (~89 M, which only warns), so Pillow never gets to decide.
MAX_PIXELS = 64_000_000

# An IDX file is refused when its header declares a body larger than this (before reading
# it: a .gz is not decompressed past what its header promises).  The full MNIST training
# images are 47 MB and EMNIST's largest split ~640 MB; 2 GiB leaves room for larger sets.
MAX_IDX_BYTES = 2 ** 31


def read_image(path: str | Path, *, size: tuple[int, int] | None = None,
               channels: int = 1) -> np.ndarray:
    """An image file as float32 ``[H, W, channels]`` in ``[0, 1]``.

    ``channels`` 1 converts to greyscale, 3 to RGB; ``size=(H, W)`` resizes
    (bilinear, with Pillow's antialiasing when shrinking).  An image of more than
    :data:`MAX_PIXELS` pixels is refused before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    def too_large(what: str) -> DataError:
        return DataError(f"{path}: image too large ({what}; at most {MAX_PIXELS:,} pixels are "
                         "read); shrink it, or it is corrupt")

    try:
        with Image.open(path) as img:  # reads the header only
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise too_large(f"{width} x {height} = {width * height:,} pixels")
            img = img.convert("L" if channels == 1 else "RGB")  # decodes
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image file") from None
    except Image.DecompressionBombError as e:  # above twice Pillow's limit: refused in open()
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise too_large(f"{int(pixels[1]):,} pixels" if pixels else
                        "past Pillow's decompression-bomb limit") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (no image format Pillow reads, such as "
                        "PNG, JPEG, BMP, GIF, TIFF or WebP, or one whose header is corrupt)") from None
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode this image") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise OSError, ValueError,
        # SyntaxError, struct.error, EOFError, IndexError, ... on corrupt data: this is the
        # one boundary where they all become a DataError.
        raise DataError(f"{path}: not a readable image, corrupt or truncated "
                        f"({type(e).__name__}: {capped(str(e), 200)})") from None
    return array[..., None] if channels == 1 else array


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as an array of its declared type and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
                raise DataError(f"{path}: not an IDX file (bad magic number {head.hex() or 'none'}; "
                                "an IDX file starts with 00 00, a type code and the number of "
                                "dimensions)")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header: it declares {ndim} dimensions "
                                f"({4 * ndim} bytes), the file ends after {len(dims)}")
            shape = struct.unpack(f">{ndim}I", dims)
            dtype = np.dtype(_IDX_TYPES[head[2]])
            expected = math.prod(shape) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DataError(f"{path}: its header declares shape {_shape(shape)}, more than the "
                                f"{MAX_IDX_BYTES:,} bytes read at most; the file is corrupt")
            body = f.read(expected + 1)  # one more: is there more than the header says?
    except FileNotFoundError:
        raise DataError(f"{path}: IDX file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip: bad header, truncated, corrupt data
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: "
                        f"{capped(str(e), 200) or 'the file ends too early'})") from None
    if len(body) < expected:
        raise DataError(f"{path}: IDX body has {len(body)} bytes, its header "
                        f"{_shape(shape)} needs {expected} (truncated or corrupt)")
    if len(body) > expected:
        raise DataError(f"{path}: IDX body is longer than the {expected} bytes its header "
                        f"{_shape(shape)} needs (corrupt, or not an IDX file)")
    return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _shape(shape: tuple[int, ...]) -> str:
    """A shape for a message; a corrupt header may declare up to 255 dimensions."""
    if len(shape) <= 4:
        return str(shape)
    return f"({', '.join(map(str, shape[:4]))}, ... {len(shape)} dimensions)"


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(images - mean) / std`` in float32."""
    return ((np.asarray(images, np.float32) - mean) / std).astype(np.float32)
