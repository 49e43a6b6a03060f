"""Model specs: your own model from a .py function, a .keras file or memory, with the built-ins' guarantees
(seeded initial weights, one-line errors) and the clipping engines' equality at noise 0."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import tensorflow as tf

from models import builders, specs
from models.specs import build_model, check_compatible, register_model
from privacy.clipping import explain_engine, make_clipped_sum_fn, per_example_loss

L = tf.keras.layers
DIGITS = ((8, 8, 1), 10)

# The branches are called in the opposite order of the concatenation, so building the function directly
# draws the initial values in another layer order than a model rebuilt from its config (a .keras file):
# only the seeded copy of `build_model` makes the two start alike.
BRANCHY = """
import tensorflow as tf

def build(input_shape, num_classes):
    L = tf.keras.layers
    inputs = tf.keras.Input(input_shape)
    flat = L.Flatten()(inputs)
    second = L.Dense(12, activation="tanh")(flat)
    first = L.Dense(12, activation="tanh")(flat)
    return tf.keras.Model(inputs, L.Dense(num_classes)(L.Concatenate()([first, second])))
"""


def _write(folder, name: str, text: str) -> str:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture
def branchy(tmp_path) -> tuple[str, str]:
    """(the .py spec, a .keras file saved from that function's model, its weights moved away)."""
    spec = _write(tmp_path, "branchy.py", BRANCHY) + ":build"
    model = build_model(spec, *DIGITS, seed=11)
    for w in model.weights:
        w.assign(w + 0.5)  # the saved weights are not the seeded ones: fresh must not use them
    keras_path = str(tmp_path / "branchy.keras")
    model.save(keras_path)
    return spec, keras_path


def test_a_function_and_its_saved_file_start_from_the_same_weights_for_the_same_seed(branchy):
    spec, keras_path = branchy
    from_py, from_file = (build_model(s, *DIGITS, seed=3) for s in (spec, keras_path))
    assert _same(from_py.get_weights(), from_file.get_weights())
    assert not _same(from_py.get_weights(), build_model(spec, *DIGITS, seed=4).get_weights())
    assert [layer.name for layer in from_py.layers] == [layer.name for layer in from_file.layers]


def test_pretrained_keeps_the_saved_weights_and_fresh_does_not(branchy):
    spec, keras_path = branchy
    saved = tf.keras.models.load_model(keras_path, compile=False).get_weights()
    pretrained = build_model(keras_path, *DIGITS, seed=3, init="pretrained")
    assert _same(pretrained.get_weights(), saved)
    fresh = build_model(keras_path, *DIGITS, seed=3, init="fresh")
    assert not any(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), saved) if a.any())
    with pytest.raises(ValueError, match="has none"):
        build_model(spec, *DIGITS, init="pretrained")  # a function has no saved weights


def test_a_layer_saved_frozen_stays_frozen(branchy, tmp_path):
    model = tf.keras.models.load_model(branchy[1], compile=False)
    model.layers[2].trainable = False  # fine-tuning: a pretrained branch kept as it is
    path = str(tmp_path / "frozen.keras")
    model.save(path)
    for init in ("pretrained", "fresh"):
        rebuilt = build_model(path, *DIGITS, init=init)
        assert [layer.trainable for layer in rebuilt.layers[1:4]] == [True, False, True]
        assert len(rebuilt.trainable_weights) == len(model.trainable_weights) == 4  # 3 Dense, 1 frozen


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_py_and_keras_models_train_to_identical_weights(branchy, digits, tmp_path, noise):
    """The centralized library path end to end: same seed, same data, same DP noise: same weights."""
    from training import centralized

    trained = []
    for i, spec in enumerate(branchy):
        config = centralized.CentralizedConfig(
            model=spec, epochs=2, batch_size=256, dp=True, noise_multiplier=noise, seed=5,
            root_output_dir=str(tmp_path / f"runs{i}"),
        )  # fmt: skip
        result = centralized.run(config, dataset=digits, verbose=False)
        assert result.privacy["engine"] == "ghost" and result.privacy["engine_reason"] is None
        trained.append(tf.keras.models.load_model(f"{result.output_dir}/model", compile=False).get_weights())
    assert _same(*trained)
    initial = build_model(branchy[0], *DIGITS, seed=5).get_weights()
    assert not _same(trained[0], initial)  # it did train


def test_registered_models_resolve_in_process_with_a_content_hash(branchy):
    spec, keras_path = branchy
    model = tf.keras.models.load_model(keras_path, compile=False)
    fresh = register_model(model)
    assert fresh.startswith("object:") and len(fresh) == len("object:") + 16
    assert register_model(tf.keras.models.load_model(keras_path, compile=False)) == fresh  # content, not id
    assert _same(
        build_model(fresh, *DIGITS, seed=3).get_weights(), build_model(spec, *DIGITS, seed=3).get_weights()
    )
    pretrained = register_model(model, init="pretrained")
    assert pretrained != fresh
    before = model.get_weights()
    for w in model.weights:
        w.assign(w * 0)  # training the object afterwards does not change the registered run
    assert _same(build_model(pretrained, *DIGITS, init="pretrained").get_weights(), before)
    with pytest.raises(ValueError, match="register_model.*pretrained"):
        build_model(fresh, *DIGITS, init="pretrained")

    def my_builder(input_shape, num_classes):
        return tf.keras.Sequential([L.InputLayer(input_shape), L.Flatten(), L.Dense(num_classes)])

    function_spec = register_model(my_builder)
    assert function_spec == register_model(my_builder) != fresh
    assert build_model(function_spec, *DIGITS).output_shape == (None, 10)
    with pytest.raises(ValueError, match="not registered in this process"):
        build_model("object:0123456789abcdef", *DIGITS)


class _Subclassed(tf.keras.Model):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.flatten, self.hidden, self.out = L.Flatten(), L.Dense(8, activation="tanh"), L.Dense(num_classes)

    def call(self, x, training=None):
        return self.out(self.hidden(self.flatten(x)))


def test_a_subclassed_model_builds_and_runs_on_the_vectorized_engine_saying_why():
    spec = register_model(lambda input_shape, num_classes: _Subclassed(num_classes))
    a, b = build_model(spec, *DIGITS, seed=2), build_model(spec, *DIGITS, seed=2)
    assert _same(a.get_weights(), b.get_weights()) and len(a.trainable_weights) == 4
    engine, reason = explain_engine("auto", a)
    assert engine == "vectorized" and "subclassed" in reason and "functional" in reason
    with pytest.raises(ValueError, match="subclassed"):
        explain_engine("fast", a)  # fast walks the layer graph too
    with pytest.raises(ValueError, match="pass the function"):
        register_model(a)  # an instance cannot be copied: its builder can


@pytest.mark.parametrize(
    "source, message",
    [
        ("def build(s, n):\n    return tf.keras.Sequential([L.InputLayer(s), L.Flatten(), L.Dense(3)])\n",
         r"outputs shape \(None, 3\), but the labels need \(None, 10\)"),
        ("def build(s, n):\n    return tf.keras.Sequential([L.InputLayer(s), L.Dense(n)])\n",
         r"outputs shape \(None, 8, 8, 10\)"),
        ("def build(s, n):\n    return tf.keras.Sequential([L.InputLayer((64,)), L.Dense(n)])\n",
         r"takes inputs of shape \(64,\), but the data's examples have shape \(8, 8, 1\)"),
        ("def build(s, n):\n    m = tf.keras.Sequential([L.InputLayer(s), L.Flatten(), L.Dense(n)])\n"
         "    m.trainable = False\n    return m\n", "no trainable weights"),
        ("def build(s, n):\n    return 'a model'\n", "returned str, not a tf.keras.Model"),
        ("def build(s, n):\n    raise RuntimeError('no GPU here')\n",
         r"build\(\(8, 8, 1\), 10\) raised RuntimeError: no GPU here"),
        ("raise ImportError('needs torch')\n", r"bad\.py raised ImportError: needs torch \(while importing"),
        ("def other(s, n):\n    pass\n", "has no function 'build' .it defines other."),
    ],
)  # fmt: skip
def test_bad_models_are_one_line_value_errors(tmp_path, source, message):
    path = _write(tmp_path, "bad.py", "import tensorflow as tf\nL = tf.keras.layers\n" + source)
    with pytest.raises(ValueError, match=message) as error:
        check_compatible(f"{path}:build", *DIGITS)
    assert "\n" not in str(error.value)


def test_bad_files_and_forms(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    for spec, message in [
        (str(tmp_path / "missing.keras"), "missing.keras does not exist"),
        (str(garbage), "garbage.keras cannot be loaded as a Keras model"),
        (str(tmp_path / "missing.py") + ":build", "missing.py does not exist"),
        ("resnet", r"unknown model 'resnet'; expected a built-in model .*PATH\.py:FUNCTION or PATH\.keras"),
        ("model.py", "names a file but no function: give model.py:FUNCTION"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            build_model(spec, *DIGITS)
        assert "\n" not in str(error.value)
    assert specs.spec_problem("object:abc", allow_objects=False) is not None  # never from a command line
    with pytest.raises(ValueError, match="init must be one of"):
        build_model("mlp", *DIGITS, init="warm")
    with pytest.raises(ValueError, match="width applies to the mlp model only"):
        build_model(str(garbage), *DIGITS, width=8)


@pytest.mark.parametrize("name, shape_and_classes", [("mlp", DIGITS), ("cnn", ((28, 28, 1), 10))])
def test_built_ins_are_the_builders_models(name, shape_and_classes):
    a = build_model(name, *shape_and_classes, seed=7)
    b = builders.build_model(name, *shape_and_classes, seed=7)
    assert a.to_json() == b.to_json() and _same(a.get_weights(), b.get_weights())
    with pytest.raises(ValueError, match="has none"):
        build_model(name, *shape_and_classes, init="pretrained")


def _two_inputs(shared: bool) -> tf.keras.Model:
    """Token ids through an Embedding, numbers through a Dense; with `shared`, one Dense serves both."""
    tf.keras.utils.set_random_seed(0)
    ids, numbers = tf.keras.Input((4,), dtype="int32", name="ids"), tf.keras.Input((6,), name="numbers")
    tokens = L.Dense(7)(L.Flatten()(L.Embedding(20, 3)(ids)))
    values = L.Dense(7)(numbers)
    top = L.Dense(5, activation="tanh", name="shared")
    second = top if shared else L.Dense(5, activation="tanh", name="own")
    return tf.keras.Model([ids, numbers], L.Dense(3)(L.Concatenate()([top(tokens), second(values)])))


@pytest.mark.parametrize("shared, expected", [(True, "vectorized"), (False, "ghost")])
def test_two_input_embedding_model_clips_like_the_reference(shared, expected):
    model = _two_inputs(shared)
    engine, reason = explain_engine("auto", model)
    assert engine == expected
    assert (reason is not None and "called more than once" in reason) == shared
    rng = np.random.default_rng(0)
    x = (tf.constant(rng.integers(0, 20, (9, 4)), tf.int32), tf.constant(rng.normal(size=(9, 6)), tf.float32))
    y = tf.constant(rng.integers(0, 3, 9))
    loss = per_example_loss("classification")
    reference = tf.function(make_clipped_sum_fn("reference", model, loss, 0.3))(x, y)
    got = tf.function(make_clipped_sum_fn(engine, model, loss, 0.3))(x, y)
    for a, b in zip(reference, got, strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(b), tf.convert_to_tensor(a), rtol=1e-4, atol=1e-6)
    unclipped = tf.function(make_clipped_sum_fn(engine, model, loss, 1e6))(x, y)
    assert not np.allclose(tf.convert_to_tensor(unclipped[-1]), tf.convert_to_tensor(got[-1]))  # it clipped
