"""Training defaults chosen by the model and the input shape, after published DP recipes.

A flag the user leaves unset takes its value from here; flags given explicitly always win.

* digits-sized inputs (under 16 pixels) and every non-CNN model: the tuned digits defaults (batch
  512, 100 epochs, SGD 0.1 with momentum 0.9 and a cosine schedule, clip 1.0), which hold the digits
  floors (README).
* CNN on 28x28 grey images: Tramer & Boneh (2021, "Differentially private learning needs better
  features (or much more data)"), end-to-end tanh CNN of Papernot et al. (2021) on MNIST: batch
  512, 40 epochs, SGD learning rate 4 with momentum 0.9, clip 0.1 (C small, learning rate large: the
  update is lr * C times a unit-norm direction). Non-private runs use learning rate 0.1, no clip.
* CNN on 32x32 colour images: the same recipe family for their CIFAR-10 CNN (batch 512, learning rate
  4, momentum 0.9, clip 0.1), 30 epochs to fit a CPU. Not validated here on real CIFAR-10 (no copy
  was reachable offline); De et al. (2022) reach far higher accuracy with WideResNets, GroupNorm and
  augmentation multiplicity, which cost far more than a CPU affords.
None of these were tuned on a test split of this project.

Your own model (`models/specs.py`: PATH.py:FUNCTION, PATH.keras, an in-memory model) takes the recipe
of its input shape, never a refusal: images of 16 pixels or more (H, W, C) the CNN recipe of that
size above (the recipes of small end-to-end CNNs), everything else (flat or tabular inputs, digits-sized
images) the MLP's digits defaults. These are starting points: for a model pretrained on public data
(`init="pretrained"`), or a much larger one, set --epochs, --learning_rate and --l2_norm_clip yourself.
"""

from __future__ import annotations

import dataclasses
import math

from models.builders import MODELS, cnn_variant


@dataclasses.dataclass(frozen=True)
class Recipe:
    batch_size: int
    epochs: int
    learning_rate: float
    momentum: float
    lr_schedule: str
    l2_norm_clip: float
    source: str


DIGITS = Recipe(512, 100, 0.1, 0.9, "cosine", 1.0, "this project's digits sweep (README)")
MNIST_CNN_DP = Recipe(512, 40, 4.0, 0.9, "cosine", 0.1, "Tramer & Boneh (2021), MNIST end-to-end CNN")
CIFAR_CNN_DP = Recipe(512, 30, 4.0, 0.9, "cosine", 0.1, "Tramer & Boneh (2021) recipe family, CIFAR-10 CNN")


def tabular_recipe(num_examples: int, dp: bool = False, linear: bool = False) -> Recipe:
    """Tables. Non-private: batch about N/10 (a power of two in [16, 512]) so that any table of 16+
    rows fits, and epochs for about 400 steps (5 to 30). DP: few, large batches (about N/3, at most
    1,024): the noise on a batch's mean falls as the batch grows, and small tables run out of budget
    before many steps; about 90 steps (3 to 30 epochs) for a `linear` model (logistic or linear
    regression, a convex loss that keeps gaining from more noisy steps), about 45 (3 to 15) for
    others (an MLP overfits the noise sooner). SGD 0.1, momentum 0.9, cosine, clip 1. Chosen on
    validation splits of scikit-learn's breast-cancer training rows (never its test split)."""
    if dp:
        batch = int(min(num_examples, max(16, min(1024, round(num_examples / 3)))))
        steps, most = (90, 30) if linear else (45, 15)
        epochs = int(min(most, max(3, math.ceil(steps / math.ceil(num_examples / batch)))))
        source = "this project's DP tabular recipe (README: your data)"
        return Recipe(batch, epochs, 0.1, 0.9, "cosine", 1.0, source)
    batch = int(min(512, max(16, 2 ** math.floor(math.log2(max(1, num_examples / 10))))))
    batch = min(batch, num_examples)
    epochs = int(min(30, max(5, math.ceil(400 / math.ceil(num_examples / batch)))))
    return Recipe(batch, epochs, 0.1, 0.9, "cosine", 1.0, "this project's tabular recipe (README: your data)")


def default_recipe(model: str, input_shape: tuple[int, ...], dp: bool, num_examples: int | None = None,
                   table: bool = False) -> Recipe:  # fmt: skip
    """The defaults for `model` (a model spec) on inputs of `input_shape`, DP or not; a table gets the
    tabular recipe sized by its `num_examples` (the number of rows, treated as public)."""
    if table and num_examples is not None:
        return tabular_recipe(num_examples, dp, linear=model in ("linear", "logistic"))
    convolutional = model == "cnn" or model not in MODELS  # a user's model: by its input shape
    if not convolutional or len(input_shape) != 3 or cnn_variant(input_shape) == "small":
        return DIGITS
    recipe = MNIST_CNN_DP if cnn_variant(input_shape) == "mnist" else CIFAR_CNN_DP
    if not dp:  # no clipping: the usual step size for unclipped gradients
        recipe = dataclasses.replace(
            recipe, learning_rate=0.1, source=recipe.source + ", non-private learning rate"
        )
    return recipe
