"""Image folders: one subfolder per class, the layout `tf.keras.utils.image_dataset_from_directory` reads.

`DIR/<class_name>/*.png|jpg|jpeg|bmp|gif` (nested folders inside a class count for that class), split
80/20 stratified by the seed as the other loaders; or `DIR/train/<class_name>/...` beside
`DIR/test/<class_name>/...`, used as given. Labels are the indices of the sorted class folder names
(`Dataset.class_names[i]` is label i), so the mapping does not depend on the file system's order.

Pixels are float32 in [0, 1], shape (H, W, C). The size is `image_size` x `image_size` (bilinear with
antialiasing) or, when not given, the images' own size if they all share it; C is 1 (`grayscale`) or 3
(`rgb`), by default 1 exactly when every image is single-channel (grey, possibly with alpha). Alpha is
dropped. TensorFlow decodes (no extra dependency), each image once. The listing is bounded before
anything is decoded and the memory is checked before the pixels are, so a wrong --data_dir (a home
folder, a disk root) fails in seconds with a message instead of reading for hours.
"""

from __future__ import annotations

import os
import re

import numpy as np

from data import file_checks
from data.datasets import Dataset, DatasetError, _split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
COLOR_MODES = ("grayscale", "rgb")
MAX_FILES = 2_000_000  # entries (files and folders) listed under --data_dir before we refuse
MAX_CLASSES = 10_000
MAX_BYTES = 16 * 2**30  # the float32 pixel arrays
_GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)  # tf.image.rgb_to_grayscale's
_RESIZE_CHUNK = 512
_LAYOUT = "one subfolder per class, DIR/<class_name>/*.png (or .jpg, .jpeg, .bmp, .gif)"


def load_image_folder(
    path: str,
    image_size: int | None = None,
    color_mode: str | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """The images under `path` as a classification Dataset (see the module docstring for the layout)."""
    whole = isinstance(image_size, int | np.integer) and not isinstance(image_size, bool)
    if image_size is not None and not (whole and image_size >= 1):
        raise DatasetError(f"--image_size must be a whole number of pixels >= 1, got {image_size!r}")
    if color_mode is not None and color_mode not in COLOR_MODES:
        raise DatasetError(f"--color_mode must be one of {COLOR_MODES}, got {color_mode!r}")
    parts = _parts(path)
    budget = _Budget(path)
    listed = {part: _list_classes(folder, budget) for part, folder in parts.items()}
    class_names = sorted(listed["train"])
    if "test" in listed and sorted(listed["test"]) != class_names:
        train_only = sorted(set(class_names) - set(listed["test"]))
        test_only = sorted(set(listed["test"]) - set(class_names))
        raise DatasetError(
            f"{path}: train/ and test/ hold different class folders (only in train/: {train_only}; only "
            f"in test/: {test_only}); give both the same class subfolders"
        )
    train_files, train_labels = _flatten(listed["train"], class_names)
    first = train_files[0]  # "the images' own size" is the first listed image's
    if "test" in listed:
        test_files, test_labels = _flatten(listed["test"], class_names)
    else:
        train_files, test_files, train_labels, test_labels = _stratified(
            path, train_files, train_labels, class_names, seed, test_fraction
        )
    x = _load_pixels(path, train_files + test_files, first, image_size, color_mode)
    n = len(train_files)
    return Dataset(
        "image_folder",
        x[:n],
        np.asarray(train_labels, np.int32),
        x[n:],
        np.asarray(test_labels, np.int32),
        len(class_names),
        class_names=tuple(class_names),
    )


def _parts(path: str) -> dict[str, str]:
    """{"train": folder} for a folder to split, or {"train": ..., "test": ...} for a given split."""
    if not os.path.exists(path):
        raise DatasetError(f"image folder not found: {path}; --data_dir must be a folder with {_LAYOUT}")
    if not os.path.isdir(path):
        raise DatasetError(f"{path} is a file, not a folder: --dataset=image_folder needs a --data_dir with "
                           "one subfolder per class")  # fmt: skip
    subfolders = _subfolders(path)
    has = [p for p in ("train", "test") if p in subfolders]
    if not has:
        return {"train": path}
    if len(has) == 1:
        other = "test" if has == ["train"] else "train"
        raise DatasetError(
            f"{path} has {has[0]}/ but no {other}/: add {other}/ with the same class subfolders, or put "
            f"the class folders directly in {path} for a seeded split"
        )
    extra = sorted(set(subfolders) - {"train", "test"})
    if extra:
        raise DatasetError(
            f"{path} holds train/ and test/ but also {extra}: move every class folder into train/ and test/"
        )
    return {"train": os.path.join(path, "train"), "test": os.path.join(path, "test")}


def _subfolders(folder: str) -> list[str]:
    """The non-hidden subfolder names of `folder`, sorted (hidden ones: .git, .ipynb_checkpoints)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"cannot list {folder}: {e.strerror}") from None


class _Budget:
    """Counts the entries listed under --data_dir and refuses beyond MAX_FILES, while listing."""

    def __init__(self, root: str) -> None:
        self.root, self.seen = root, 0

    def spend(self, n: int) -> None:
        self.seen += n
        if self.seen > MAX_FILES:
            raise DatasetError(
                f"{self.root} holds more than {MAX_FILES:,} files and folders: is --data_dir the image "
                f"folder, with {_LAYOUT}? For more images than that, use a subset"
            )


def _list_classes(folder: str, budget: _Budget) -> dict[str, list[str]]:
    """{class name: its image files, sorted}, every class folder checked to hold at least one image."""
    classes = _subfolders(folder)
    budget.spend(len(classes))
    if not classes:
        loose = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)]
        found = f" ({len(loose)} image files lie directly in it)" if loose else ""
        raise DatasetError(f"{folder} has no class subfolders{found}; expected {_LAYOUT}")
    if len(classes) < 2:
        raise DatasetError(
            f"{folder} has one class folder ({classes[0]}/); a classifier needs at least 2, {_LAYOUT}"
        )
    if len(classes) > MAX_CLASSES:
        raise DatasetError(f"{folder} has {len(classes):,} class folders, more than {MAX_CLASSES:,}; "
                           f"is it the image folder, with {_LAYOUT}?")  # fmt: skip
    listed = {}
    for name in classes:
        class_folder = os.path.join(folder, name)
        files = []
        for sub, dirs, names in os.walk(class_folder, onerror=_walk_error):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            budget.spend(len(dirs) + len(names))
            files += [os.path.join(sub, f) for f in sorted(names) if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            raise DatasetError(f"class folder {class_folder} has no images ({', '.join(IMAGE_EXTENSIONS)}): "
                               "add some, or remove the folder")  # fmt: skip
        listed[name] = files
    return listed


def _walk_error(error: OSError) -> None:
    raise DatasetError(f"cannot list {error.filename}: {error.strerror}")


def _flatten(listed: dict[str, list[str]], class_names: list[str]) -> tuple[list[str], list[int]]:
    files, labels = [], []
    for label, name in enumerate(class_names):
        files += listed[name]
        labels += [label] * len(listed[name])
    return files, labels


def _stratified(path: str, files: list[str], labels: list[int], class_names: list[str], seed: int,
                test_fraction: float) -> tuple[list[str], list[str], list[int], list[int]]:  # fmt: skip
    """The seeded stratified split of `datasets._split`, made on file indices before any decoding."""
    counts = np.bincount(labels, minlength=len(class_names))
    if counts.min() < 2:
        name = class_names[int(np.argmin(counts))]
        raise DatasetError(
            f"class folder {os.path.join(path, name)} has 1 image; a stratified train/test split needs at "
            "least 2 per class: add images, or give train/ and test/ folders"
        )
    try:
        tr, te, y_tr, y_te = _split(np.arange(len(files)), np.asarray(labels), test_fraction, seed, True)
    except ValueError as e:  # e.g. fewer test images than classes
        raise DatasetError(
            f"{path}: cannot split {len(files)} images of {len(class_names)} classes stratified with test "
            f"fraction {test_fraction} ({e}); add images, or give train/ and test/ folders"
        ) from None
    return [files[i] for i in tr], [files[i] for i in te], list(y_tr), list(y_te)


def _load_pixels(path: str, files: list[str], first: str, image_size: int | None,
                 color_mode: str | None) -> np.ndarray:  # fmt: skip
    """Decodes every file once; (N, H, W, C) float32 in [0, 1] at the resolved size and color mode.

    `first` (one of `files`) is decoded first: its size is the default and the memory check's."""
    reference = _decode(first)
    size = (int(image_size), int(image_size)) if image_size is not None else reference.shape[:2]
    channels = {"grayscale": 1, "rgb": 3, None: 1 if reference.shape[2] <= 2 else 3}[color_mode]
    _check_memory(path, len(files), size, channels)
    native = []
    for f in files:
        image = reference if f == first else _decode(f)
        if image_size is None and image.shape[:2] != reference.shape[:2]:
            raise DatasetError(
                f"images differ in size: {first} is {_hw(reference)}, {f} is {_hw(image)}; pass "
                "--image_size=N to resize every image to NxN"
            )
        native.append(image)
    if color_mode is None:
        color_mode = "grayscale" if all(im.shape[2] <= 2 for im in native) else "rgb"
    out = np.empty((len(files), *size, 1 if color_mode == "grayscale" else 3), np.float32)
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(native):
        by_shape.setdefault(image.shape[:2], []).append(i)
    for shape, indices in by_shape.items():
        for start in range(0, len(indices), _RESIZE_CHUNK):
            chunk = indices[start : start + _RESIZE_CHUNK]
            batch = np.stack([_convert(native[i], color_mode) for i in chunk])
            out[chunk] = batch if shape == tuple(size) else _resize(batch, size)
            for i in chunk:
                native[i] = None  # free each decoded image once converted
    return out


def _hw(image: np.ndarray) -> str:
    return f"{image.shape[0]}x{image.shape[1]}"


def _check_memory(path: str, n: int, size: tuple[int, int], channels: int) -> None:
    need = n * size[0] * size[1] * channels * 4
    if need > MAX_BYTES:
        raise DatasetError(
            f"{path}: {n:,} images of {size[0]}x{size[1]}x{channels} take {need / 2**30:.1f} GiB as float32, "
            f"more than {MAX_BYTES / 2**30:.0f} GiB: pass a smaller --image_size (or --color_mode=grayscale)"
        )


def _decode(file: str) -> np.ndarray:
    """The file's pixels as uint8 (H, W, C), C its own channels (1 to 4); a GIF's first frame."""
    file_checks.regular_file(file, "image")  # a FIFO named x.png would block open() forever
    import tensorflow as tf

    try:
        with open(file, "rb") as f:
            data = f.read()
        image = tf.io.decode_image(data, channels=0, expand_animations=False)
    except OSError as e:
        raise DatasetError(f"cannot read image {file}: {e.strerror}") from None
    except tf.errors.OpError as e:
        reason = re.sub(r"\{\{.*?\}\}|\s*\[Op:\w+\]", "", str(e)).strip().splitlines()[0]
        raise DatasetError(f"cannot decode image {file} ({reason}): replace or remove it") from None
    return image.numpy()


def _convert(image: np.ndarray, color_mode: str) -> np.ndarray:
    """uint8 (H, W, 1..4) -> float32 in [0, 1] with 1 (grayscale) or 3 (rgb) channels; alpha dropped."""
    x = image.astype(np.float32) / 255.0
    grey = x.shape[2] <= 2
    if color_mode == "grayscale":
        return x[..., :1] if grey else (x[..., :3] @ _GREY_WEIGHTS)[..., None]
    return np.repeat(x[..., :1], 3, axis=2) if grey else x[..., :3]


def _resize(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import tensorflow as tf

    resized = tf.image.resize(batch, size, method="bilinear", antialias=True).numpy()
    return np.clip(resized, 0.0, 1.0)
