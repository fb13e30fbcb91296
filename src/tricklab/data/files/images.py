"""Images: a folder with one sub-folder per class (PNG/JPEG through Pillow, extra ``images``).

``path/cat/001.png, path/dog/7.jpg, ...``: the class of an image is the name of the folder directly under the
root that holds it (images in deeper folders count for that class). Every image is read in two passes: first
the header of every file (size and mode: an unreadable file, an empty class folder or mixed sizes without
``size:`` stop the load before any pixel is decoded), then the pixels. Images are converted to grayscale
(``L``) or RGB (``mode: auto`` picks grayscale when every file is single-channel), resized to ``size: [H, W]``
with the stated filter when given, and stored channels-first as float32 in [0, 1] (8-bit / 255, 16-bit /
65535). EXIF orientation is not applied: pixels are used as stored.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.data.files.common import Digest, Features, Part, Sources, require
from tricklab.data.files.spec import FileSpec
from tricklab.errors import DataError

__all__ = ["GRAY_MODES", "decode_images", "open_image", "read_image_folders"]

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_RESAMPLE = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "lanczos": "LANCZOS"}


def _class_files(root: Path, extensions: list[str]) -> dict[str, list[Path]]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"{root}: no class folders; an image folder holds one sub-folder per class "
                        "(root/cat/1.png, root/dog/2.png, ...)")
    out = {}
    for d in dirs:
        files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                       and not any(part.startswith(".") for part in p.relative_to(d).parts))
        if not files:
            raise DataError(f"{d}: the class folder {d.name!r} holds no images ({', '.join(extensions)}); add "
                            "images or remove the folder")
        out[d.name] = files
    return out


def open_image(data: bytes, where: str) -> Any:
    Image = require("PIL.Image", "format image_folder")
    try:
        img = Image.open(io.BytesIO(data))
        img.size  # noqa: B018 - touches the header
        return img
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for a bad header
        raise DataError(f"{where}: not a readable image ({type(exc).__name__}: {exc}); remove or replace the "
                        "file") from exc


def decode_images(images: list[Any], names: list[str], size: tuple[int, int] | None, mode: str,
                  resample: str) -> tuple[np.ndarray, str]:
    """PIL images -> (N, C, H, W) float32 in [0, 1]; checks sizes first. Returns the array and the mode used.

    ``names[i]`` is how messages refer to image i (its file). ``size`` is (H, W) or None (all must agree).
    """
    Image = require("PIL.Image", "images")
    if mode == "auto":
        mode = "grayscale" if all(im.mode in GRAY_MODES for im in images) else "rgb"
    if size is None:
        first = images[0].size
        for i, im in enumerate(images):
            if im.size != first:
                n_diff = sum(1 for j in images if j.size != first)
                raise DataError(f"{names[i]}: image is {im.size[1]}x{im.size[0]} (HxW) but {names[0]} is "
                                f"{first[1]}x{first[0]} ({n_diff} of {len(images)} images differ); set size: "
                                "[height, width] to resize them all to one size")
        size = (first[1], first[0])
    h, w = size
    channels = 1 if mode == "grayscale" else 3
    out = np.empty((len(images), channels, h, w), dtype=np.float32)
    filt = getattr(Image.Resampling, _RESAMPLE[resample])
    for i, im in enumerate(images):
        try:
            im.load()
            if im.mode.startswith("I;16") or im.mode in ("I", "F"):
                # 16-bit grayscale: scale by the 16-bit range instead of clipping to 8 bits; float images as is
                arr = np.asarray(im, dtype=np.float32) / (1.0 if im.mode == "F" else 65535.0)
                if im.size != (w, h):
                    arr = np.asarray(Image.fromarray(arr).resize((w, h), filt), dtype=np.float32)
                arr = np.clip(arr, 0.0, 1.0)
                if channels == 3:
                    arr = np.repeat(arr[..., None], 3, axis=2)
            else:
                conv = im.convert("L" if channels == 1 else "RGB")
                if conv.size != (w, h):
                    conv = conv.resize((w, h), filt)
                arr = np.asarray(conv, dtype=np.float64) / 255.0
        except Exception as exc:  # truncated or corrupt pixel data shows up only when decoding
            raise DataError(f"{names[i]}: the image data cannot be decoded ({type(exc).__name__}: {exc}); remove or "
                            "replace the file") from exc
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out, mode


def read_image_folders(spec: FileSpec, digest: Digest) -> Sources:
    ext = spec["extensions"]
    headers: dict[str, tuple[list[Any], list[str], list[str]]] = {}
    for role, loc in spec.sources.items():
        root = loc["path"]
        imgs, names, labels = [], [], []
        for cls, files in _class_files(root, ext).items():
            for f in files:
                try:
                    data = f.read_bytes()
                except OSError as exc:
                    raise DataError(f"{f}: cannot be read ({exc})") from exc
                digest.add_bytes(f"{role}:{f.relative_to(root).as_posix()}", data)
                imgs.append(open_image(data, str(f)))
                names.append(str(f))
                labels.append(cls)
        headers[role] = (imgs, names, labels)
    # one decision for every split: the size check and the auto mode look at all images together
    all_imgs = [im for imgs, _, _ in headers.values() for im in imgs]
    all_names = [n for _, names, _ in headers.values() for n in names]
    x_all, mode = decode_images(all_imgs, all_names, spec["size"], spec["mode"], spec["resample"])
    parts: dict[str, Part] = {}
    start = 0
    for role, (imgs, names, labels) in headers.items():
        n = len(imgs)
        parts[role] = Part(str(spec.sources[role]["path"]), x_all[start:start + n], np.array(labels, dtype=object),
                           np.arange(n), item="image", paths=np.array(names, dtype=object))
        start += n

    def featurize(p: dict[str, Part]) -> Features:
        return Features({r: q.x for r, q in p.items()}, tuple(p["train"].x.shape[1:]),
                        {"image_mode": mode, "image_size": list(p["train"].x.shape[2:])})

    return Sources(parts, featurize)
