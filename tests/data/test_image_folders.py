"""Image folders (`--dataset=image_folder`): real PNG/JPEG/BMP files written here, read back exactly.

Each image carries its class and its index in pixels (0, 0) and (0, 1), so a test can tell which file
every row of x came from and check labels, order and pixel values end to end.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from data import image_folders
from data.datasets import Dataset, DatasetError, load_dataset
from data.image_folders import load_image_folder

CLASSES = ("cat", "ant", "bee")  # written in this order; labels follow the sorted names
SORTED = ("ant", "bee", "cat")


def _png(path, pixels: np.ndarray) -> None:
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(pixels))


def _bmp(path, rgb: np.ndarray) -> None:
    """A 24-bit BMP by hand (TensorFlow decodes BMP but cannot encode it): BGR rows, bottom-up."""
    h, w, _ = rgb.shape
    pad = b"\0" * ((4 - (w * 3) % 4) % 4)
    pixels = b"".join(rgb[y, :, ::-1].tobytes() + pad for y in range(h - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(header + info + pixels)


def _image(label: int, index: int, channels: int, size: int = 8, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng([seed, label, index]).integers(0, 256, (size, size, channels), np.uint8)
    pixels[0, 0], pixels[0, 1], pixels[1, 1] = 50 * label, index, 255  # class, index, a full-scale pixel
    return pixels


def write_folder(root, per_class: int = 12, channels: int = 1, size: int = 8, seed: int = 0) -> dict:
    """root/<class>/<i>.png for CLASSES; {(sorted label, index): the pixels written}."""
    written = {}
    for name in CLASSES:
        label = SORTED.index(name)
        for i in range(per_class):
            written[label, i] = _image(label, i, channels, size, seed)
            _png(os.path.join(root, name, f"{i:02d}.png"), written[label, i])
    return written


def _source(x: np.ndarray) -> tuple[int, int]:
    """(label, index) that an image row carries in its marker pixels."""
    return int(round(x[0, 0, 0] * 255)) // 50, int(round(x[0, 1, 0] * 255))


def test_grayscale_folder_shapes_range_labels_and_pixels(tmp_path):
    written = write_folder(tmp_path)
    ds = load_image_folder(str(tmp_path), seed=0)
    assert ds.name == "image_folder" and ds.class_names == SORTED and ds.num_classes == 3
    assert ds.input_shape == (8, 8, 1) and ds.x_test.shape[1:] == (8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.client_ids is None
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
    for x, y in [(ds.x_train, ds.y_train), (ds.x_test, ds.y_test)]:
        for row, label in zip(x, y):
            source = _source(row)
            assert source[0] == label  # the label is the sorted index of the image's folder
            np.testing.assert_array_equal(np.round(row * 255).astype(np.uint8), written[source])
    seen = [_source(r) for r in np.concatenate([ds.x_train, ds.x_test])]
    assert sorted(seen) == sorted(written)  # every image exactly once


def test_split_is_stratified_like_the_other_loaders_and_deterministic_by_seed(tmp_path):
    write_folder(tmp_path)
    a, b, c = (load_image_folder(str(tmp_path), seed=s) for s in (3, 3, 4))
    assert a.num_train == 28 and len(a.x_test) == 8  # 20% of 36, rounded up as sklearn does
    assert set(np.bincount(a.y_test, minlength=3)) <= {2, 3}  # 8 test images over 3 classes of 12
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert {_source(r) for r in a.x_test} != {_source(r) for r in c.x_test}
    via_dispatch = load_dataset("image_folder", str(tmp_path), seed=3)
    np.testing.assert_array_equal(via_dispatch.x_test, a.x_test)


def test_train_and_test_folders_are_used_as_given(tmp_path):
    for part, n, seed in (("train", 4, 0), ("test", 2, 1)):
        for name in CLASSES:
            for i in range(n):
                pixels = _image(SORTED.index(name), i, 1, seed=seed)
                pixels[0, 2] = {"train": 10, "test": 20}[part]
                _png(tmp_path / part / name / f"{i}.png", pixels)
    for seed in (0, 1):
        ds = load_image_folder(str(tmp_path), seed=seed)
        assert ds.num_train == 12 and len(ds.x_test) == 6 and ds.class_names == SORTED
        assert set(np.round(ds.x_train[:, 0, 2, 0] * 255)) == {10}
        assert set(np.round(ds.x_test[:, 0, 2, 0] * 255)) == {20}
        np.testing.assert_array_equal(ds.y_test, [0, 0, 1, 1, 2, 2])  # sorted class, then file order


def test_color_mode_is_inferred_and_can_be_forced(tmp_path):
    grey, rgb, mixed = tmp_path / "grey", tmp_path / "rgb", tmp_path / "mixed"
    write_folder(grey, per_class=4, channels=1)
    written = write_folder(rgb, per_class=4, channels=3)
    write_folder(mixed, per_class=4, channels=1)
    _png(mixed / "ant" / "colour.png", np.zeros((8, 8, 3), np.uint8))
    assert load_image_folder(str(grey)).input_shape == (8, 8, 1)
    assert load_image_folder(str(mixed)).input_shape == (8, 8, 3)  # one colour image makes it rgb
    as_rgb = load_image_folder(str(grey), color_mode="rgb")
    assert as_rgb.input_shape == (8, 8, 3)
    np.testing.assert_array_equal(as_rgb.x_train[..., 0], as_rgb.x_train[..., 2])  # grey copied
    colour = load_image_folder(str(rgb), seed=5)
    as_grey = load_image_folder(str(rgb), color_mode="grayscale", seed=5)
    assert colour.input_shape == (8, 8, 3) and as_grey.input_shape == (8, 8, 1)
    expected = colour.x_train @ np.array([0.2989, 0.5870, 0.1140], np.float32)  # rgb_to_grayscale's
    np.testing.assert_allclose(as_grey.x_train[..., 0], expected, atol=1e-6)
    row = colour.x_test[0]
    np.testing.assert_array_equal(np.round(row * 255).astype(np.uint8), written[_source(row)])


def test_jpeg_and_bmp_files_and_alpha_are_read(tmp_path):
    import tensorflow as tf

    ramp = np.add.outer(np.arange(8), np.arange(8)) * 8  # smooth, so that JPEG stays close
    rgb = np.stack([ramp, 120 - ramp // 2, 60 + ramp], axis=2).astype(np.uint8)
    os.makedirs(tmp_path / "a" / "nested")
    os.makedirs(tmp_path / "b")
    _bmp(tmp_path / "a" / "x.bmp", rgb)
    tf.io.write_file(str(tmp_path / "a" / "nested" / "y.JPG"), tf.io.encode_jpeg(rgb, quality=100))
    _png(tmp_path / "b" / "z.png", np.concatenate([rgb, np.full((8, 8, 1), 7, np.uint8)], axis=2))  # RGBA
    _png(tmp_path / "b" / "w.png", rgb)
    (tmp_path / "b" / "notes.txt").write_text("not an image: ignored")
    ds = load_image_folder(str(tmp_path), test_fraction=0.5, seed=0)
    assert ds.input_shape == (8, 8, 3) and ds.num_train == len(ds.x_test) == 2
    x = np.concatenate([ds.x_train, ds.x_test])
    exact = [np.array_equal(np.round(r * 255).astype(np.uint8), rgb) for r in x]
    assert sum(exact) == 3  # the BMP and both PNGs (the RGBA one's alpha dropped); the JPEG is close
    assert np.abs(x * 255 - rgb).max() < 12


def test_image_size_resizes_bilinear_with_antialias(tmp_path):
    import tensorflow as tf

    written = write_folder(tmp_path, per_class=4)
    ds = load_image_folder(str(tmp_path), image_size=4, seed=0)
    assert ds.input_shape == (4, 4, 1) and ds.x_test.shape[1:] == (4, 4, 1)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    same = load_image_folder(str(tmp_path), image_size=8, seed=0)  # its own size: exact pixels
    label, index = _source(same.x_test[0])
    expected = tf.image.resize(written[label, index][None] / 255.0, (4, 4), antialias=True)[0]
    np.testing.assert_allclose(ds.x_test[0], np.clip(expected, 0, 1), atol=1e-5)


def test_mixed_sizes_need_image_size_and_then_load(tmp_path):
    write_folder(tmp_path, per_class=4)
    _png(tmp_path / "bee" / "big.png", np.full((12, 10, 1), 128, np.uint8))
    with pytest.raises(DatasetError, match=r"differ in size: .*8x8, .*big\.png is 12x10; pass --image_size"):
        load_image_folder(str(tmp_path))
    ds = load_image_folder(str(tmp_path), image_size=6, test_fraction=0.25)
    x = np.concatenate([ds.x_train, ds.x_test])
    assert x.shape == (13, 6, 6, 1)
    flat = [r for r in x if np.ptp(r) < 1e-6]  # the constant image stays constant when resized
    assert len(flat) == 1 and flat[0][0, 0, 0] == pytest.approx(128 / 255, abs=1e-6)


def test_a_28x28_grayscale_folder_gets_the_mnist_cnn_recipe(tmp_path):
    from models.builders import cnn_variant
    from training.recipes import MNIST_CNN_DP, default_recipe

    write_folder(tmp_path, per_class=5, size=28)
    ds = load_dataset("image_folder", str(tmp_path), seed=0)
    assert ds.input_shape == (28, 28, 1) and cnn_variant(ds.input_shape) == "mnist"
    assert default_recipe("cnn", ds.input_shape, dp=True) == MNIST_CNN_DP


def _error_cases(root) -> dict[str, tuple]:
    """name -> (folder, load_image_folder kwargs, message regex); each folder built here."""
    empty, loose, one, no_images, bad, txt = (
        root / n for n in ("empty", "loose", "one", "noimg", "bad", "t")
    )
    for folder in (empty, loose, one / "only", no_images / "a", bad, txt):
        folder.mkdir(parents=True)
    _png(loose / "x.png", np.zeros((4, 4, 1), np.uint8))
    _png(one / "only" / "x.png", np.zeros((4, 4, 1), np.uint8))
    (no_images / "a" / "readme.txt").write_text("x")
    for name in ("b", "c"):
        _png(no_images / name / "x.png", np.zeros((4, 4, 1), np.uint8))
    write_folder(bad, per_class=4)
    (bad / "bee" / "broken.png").write_bytes(b"this is not a png")
    txt_file = txt / "data.txt"
    txt_file.write_text("x")
    split = root / "split"
    for part, names in (("train", ("a", "b")), ("test", ("a", "c"))):
        for name in names:
            _png(split / part / name / "x.png", np.zeros((4, 4, 1), np.uint8))
    train_only = root / "train_only"
    write_folder(train_only / "train", per_class=2)
    tiny = root / "tiny"
    write_folder(tiny, per_class=2)  # 6 images, 3 classes: 2 test images cannot hold every class
    lonely = root / "lonely"
    write_folder(lonely, per_class=4)
    _png(lonely / "dog" / "x.png", np.zeros((8, 8, 1), np.uint8))
    return {
        "missing": (root / "nope", {}, r"image folder not found: .*nope; --data_dir must be a folder"),
        "a file": (txt_file, {}, r"data\.txt is a file, not a folder"),
        "no subfolders": (empty, {}, r"empty has no class subfolders; expected one subfolder per class"),
        "loose images": (loose, {}, r"no class subfolders \(1 image files lie directly in it\)"),
        "one class": (one, {}, r"has one class folder \(only/\); a classifier needs at least 2"),
        "empty class": (no_images, {}, r"class folder .*noimg/a has no images \(\.png"),
        "undecodable": (bad, {}, r"cannot decode image .*bee/broken\.png \(Unknown image file format"),
        "size 0": (bad, {"image_size": 0}, r"--image_size must be a whole number of pixels >= 1, got 0"),
        "size -3": (bad, {"image_size": -3}, r"--image_size must be .* >= 1, got -3"),
        "size 2.5": (bad, {"image_size": 2.5}, r"--image_size must be .* >= 1, got 2\.5"),
        "color mode": (bad, {"color_mode": "cmyk"}, r"--color_mode must be one of \('grayscale', 'rgb'\)"),
        "class sets": (
            split,
            {},
            r"different class folders \(only in train/: \['b'\]; only in test/: \['c'\]",
        ),
        "train only": (train_only, {}, r"has train/ but no test/: add test/"),
        "too few": (tiny, {}, r"tiny: cannot split 6 images of 3 classes stratified .* add images, or give"),
        "1 per class": (
            lonely,
            {},
            r"class folder .*lonely/dog has 1 image; a stratified .* needs at least 2",
        ),
    }


CASES = ("missing", "a file", "no subfolders", "loose images", "one class", "empty class", "undecodable",
         "size 0", "size -3", "size 2.5", "color mode", "class sets", "train only",
         "too few", "1 per class")  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_every_bad_folder_is_one_clear_dataset_error(tmp_path, case):
    folder, kwargs, message = _error_cases(tmp_path)[case]
    with pytest.raises(DatasetError, match=message) as raised:
        load_image_folder(str(folder), **kwargs)
    assert "\n" not in str(raised.value)


def test_too_many_files_and_too_many_pixels_are_refused_before_decoding(tmp_path, monkeypatch):
    write_folder(tmp_path, per_class=4)
    decoded = []
    real_decode = image_folders._decode
    monkeypatch.setattr(image_folders, "_decode", lambda f: decoded.append(f) or real_decode(f))
    monkeypatch.setattr(image_folders, "MAX_FILES", 10)
    with pytest.raises(DatasetError, match=r"holds more than 10 files and folders: is --data_dir"):
        load_image_folder(str(tmp_path))
    assert decoded == []  # the listing stopped before any decoding
    monkeypatch.setattr(image_folders, "MAX_FILES", 100)
    monkeypatch.setattr(image_folders, "MAX_BYTES", 12 * 32 * 32 * 4 - 1)
    with pytest.raises(DatasetError, match=r"12 images of 32x32x1 take .* GiB as float32, more than"):
        load_image_folder(str(tmp_path), image_size=32)
    assert len(decoded) <= 1  # at most the first image, to learn the size
    decoded.clear()
    assert load_image_folder(str(tmp_path), image_size=16).input_shape == (16, 16, 1)
    assert len(decoded) == len(set(decoded)) == 12  # every image decoded once, none twice


def test_dispatch_flags_and_the_dataset_dataclass(tmp_path):
    write_folder(tmp_path, per_class=5)
    ds = load_dataset("image_folder", str(tmp_path), image_size=4, color_mode="rgb")
    assert ds.input_shape == (4, 4, 3) and ds.class_names == SORTED
    with pytest.raises(DatasetError, match="needs --data_dir \\(the folder with one subfolder per class\\)"):
        load_dataset("image_folder")
    with pytest.raises(DatasetError, match="--image_size and --color_mode only apply to --dataset=image_f"):
        load_dataset("digits", image_size=8)
    x, y = np.zeros((2, 1), np.float32), np.zeros(2, np.int32)
    positional = Dataset("d", x, y, x, y, 2, np.array([0, 1]))  # positional construction still works
    assert positional.class_names is None and list(positional.client_ids) == [0, 1]


def test_pipeline_configs_load_the_folder_with_their_image_settings(tmp_path):
    from training import centralized
    from training.comparison import ComparisonConfig, load_datasets
    from training.federated.experiment import FederatedConfig, load_population

    write_folder(tmp_path, per_class=5)
    config = centralized.CentralizedConfig(dataset="image_folder", data_dir=str(tmp_path), model="cnn",
                                           image_size=4, color_mode="rgb", epochs=1, batch_size=4,
                                           root_output_dir=str(tmp_path / "runs"))  # fmt: skip
    assert centralized.prepare(config).dataset.input_shape == (4, 4, 3)
    assert not (tmp_path / "runs").exists()  # prepare writes nothing
    config = FederatedConfig(dataset="image_folder", data_dir=str(tmp_path), num_clients=4,
                             clients_per_round=2, partition="iid", image_size=4)  # fmt: skip
    population = load_population(config)
    assert population.num_clients == 4 and population.input_shape == (4, 4, 1)
    assert sum(population.client_sizes()) == 12  # the training split of 15 images, partitioned
    compare = ComparisonConfig(dataset="image_folder", data_dir=str(tmp_path), color_mode="rgb", seeds=(0, 1))
    datasets = load_datasets(compare, None)
    assert [d.input_shape for d in datasets.values()] == [(8, 8, 3)] * 2
    assert "color_mode" in compare.settings() and "image_size" not in compare.settings()  # unset: as before


def _one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def _train(run_binary, data, runs, *extra: str):
    flags = ("--dataset=image_folder", f"--data_dir={data}", "--model=cnn", "--epochs=1", "--batch_size=8")
    return run_binary("train_centralized", *flags, f"--root_output_dir={runs}", *extra, timeout=300)


def test_train_centralized_binary_trains_on_an_image_folder(run_binary, tmp_path):
    data, runs = tmp_path / "images", tmp_path / "runs"
    import tensorflow as tf

    write_folder(data, per_class=6, size=16)
    _png(data / "bee" / "small.png", np.zeros((10, 10, 1), np.uint8))  # so --image_size must reach the loader
    proc = _train(run_binary, data, runs, "--image_size=12", "--color_mode=rgb", "--experiment_name=ok")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tf.keras.models.load_model(str(runs / "ok" / "model"), compile=False)
    assert model.input_shape == (None, 12, 12, 3) and model.output_shape == (None, 3)
    assert json.loads((runs / "ok" / "privacy.json").read_text()) and "test accuracy" in proc.stdout
    flags_txt = (runs / "ok" / "flags.txt").read_text()
    assert "--dataset=image_folder" in flags_txt and "--image_size=12" in flags_txt
    assert "--color_mode=rgb" in flags_txt


def test_train_centralized_binary_refuses_a_bad_image_folder_and_writes_nothing(run_binary, tmp_path):
    data, runs = tmp_path / "images", tmp_path / "runs"
    write_folder(data, per_class=6)
    (data / "ant" / "broken.png").write_bytes(b"\x89PNG but cut short")
    line = _one_line_error(_train(run_binary, data, runs))
    assert "cannot decode image" in line and "ant/broken.png" in line
    assert not runs.exists()  # nothing written, not even the run folder
    assert "--image_size must be > 0" in _one_line_error(_train(run_binary, data, runs, "--image_size=0"))
    assert not runs.exists()
