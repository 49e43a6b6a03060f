"""Training defaults follow the model and the input shape; a value the user gives always wins."""

from __future__ import annotations

import pytest

from models.builders import build_model, cnn_variant
from training import recipes
from training.centralized import CentralizedConfig, with_recipe


@pytest.mark.parametrize(
    "shape, variant, weights",
    [((8, 8, 1), "small", None), ((28, 28, 1), "mnist", 26_010), ((32, 32, 3), "cifar", None)],
)
def test_the_cnn_follows_the_input_shape(shape, variant, weights):
    assert cnn_variant(shape) == variant
    model = build_model("cnn", shape, 10, seed=0)
    if weights is not None:  # Papernot et al.'s MNIST CNN: 26k weights
        assert model.count_params() == weights
    assert model.output_shape == (None, 10)


def test_digits_keep_their_tuned_defaults_and_images_get_the_published_recipe():
    assert recipes.default_recipe("mlp", (28, 28, 1), dp=True) is recipes.DIGITS  # MLP: digits defaults
    assert recipes.default_recipe("cnn", (8, 8, 1), dp=True) is recipes.DIGITS
    mnist = recipes.default_recipe("cnn", (28, 28, 1), dp=True)
    assert (mnist.batch_size, mnist.learning_rate, mnist.l2_norm_clip) == (512, 4.0, 0.1)
    assert recipes.default_recipe("cnn", (28, 28, 1), dp=False).learning_rate == 0.1  # unclipped steps
    assert recipes.default_recipe("cnn", (32, 32, 3), dp=True) is recipes.CIFAR_CNN_DP


def test_explicit_values_win_and_unset_ones_come_from_the_recipe():
    config = with_recipe(CentralizedConfig(model="cnn", dp=True, target_epsilon=3.0, epochs=7), (28, 28, 1))
    assert config.epochs == 7 and config.learning_rate == 4.0 and config.l2_norm_clip == 0.1
    digits = with_recipe(CentralizedConfig(), (8, 8, 1))
    resolved = (digits.epochs, digits.batch_size, digits.learning_rate, digits.lr_schedule)
    assert resolved == (100, 512, 0.1, "cosine")
    by_rate = with_recipe(CentralizedConfig(sampling_rate=0.1), (8, 8, 1))
    assert by_rate.batch_size is None  # resolved from the sampling rate, not the recipe


@pytest.mark.parametrize("rows", [16, 17, 100, 455, 4000, 100_000])
@pytest.mark.parametrize("dp", [False, True])
def test_every_table_fits_its_recipe(rows, dp):
    recipe = recipes.default_recipe("mlp", (30,), dp=dp, num_examples=rows, table=True)
    assert 1 <= recipe.batch_size <= rows and recipe.epochs >= 3


def test_dp_tables_take_few_large_batches():
    """DP: about N/3 per batch (at most 1,024); about 45 steps, 90 for a linear model; the non-private
    recipe is unchanged."""
    small = recipes.tabular_recipe(455, dp=True)
    assert (small.batch_size, small.epochs) == (152, 15)  # 3 steps an epoch
    logistic = recipes.default_recipe("logistic", (30,), dp=True, num_examples=455, table=True)
    assert (logistic.batch_size, logistic.epochs) == (152, 30)
    large = recipes.tabular_recipe(100_000, dp=True)
    assert (large.batch_size, large.epochs) == (1024, 3)
    plain = recipes.tabular_recipe(455, dp=False)
    assert (plain.batch_size, plain.epochs) == (32, 27)
