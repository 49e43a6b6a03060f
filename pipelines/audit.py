"""Membership-inference audit of a saved classifier on the split it was trained on.

  python -m pipelines.audit --model_dir=runs/centralized/model --dataset=digits --seed=0

Members are training examples, non-members held-out test examples (balanced). The split is
rebuilt with load_dataset(dataset, data_dir, seed=seed), which is the split the training
pipelines used for that seed. Prints the attacks' AUC and TPR at 1% FPR and writes
audit.json next to the model folder.
"""

from __future__ import annotations

import os

from absl import app, flags

from data.datasets import DATASETS
from pipelines import cli

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Saved model folder (Keras SavedModel, logits).")
_DATASET = flags.DEFINE_enum("dataset", "digits", DATASETS, "Dataset the model was trained on.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Cache folder for MNIST/Fashion-MNIST/CIFAR-10, or CSV path."
)
_SEED = flags.DEFINE_integer("seed", 0, "The training run's seed (it fixes the train/test split).")
_REF_MODELS = flags.DEFINE_integer(
    "reference_models", 4, "Reference models for offline LiRA (0: loss-threshold attack only).", lower_bound=0
)
_REF_MODEL = flags.DEFINE_string(
    "reference_architecture", None, "Builder name for reference models (default: the saved model's name)."
)
_MAX_PER_SIDE = flags.DEFINE_integer("max_per_side", None, "Cap on members (= non-members) audited.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON (default: <model_dir>/../audit.json).")

flags.mark_flag_as_required("model_dir")
flags.register_validator("model_dir", lambda v: v is None or os.path.isdir(v), "--model_dir must be a folder")
flags.register_validator("max_per_side", lambda v: v is None or v > 0, "--max_per_side must be > 0")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from pipelines.absl_tf import import_tensorflow

    import_tensorflow()  # before anything imports TF (see pipelines/absl_tf.py)
    from data.datasets import load_dataset
    from models.builders import MODELS
    from pipelines import outputs
    from privacy import audit

    model_dir = os.path.normpath(_MODEL_DIR.value)
    out_path = _OUTPUT.value or os.path.join(os.path.dirname(os.path.abspath(model_dir)), "audit.json")
    if not os.access(os.path.dirname(os.path.abspath(out_path)) or ".", os.W_OK):
        raise app.UsageError(f"cannot write {out_path}")
    try:
        dataset = load_dataset(_DATASET.value, _DATA_DIR.value, seed=_SEED.value)
        if dataset.task != "classification":
            raise ValueError("membership audit needs a classification dataset")
        logits_fn = audit.load_logits_fn(model_dir)
        split = audit.audit_split(
            dataset.num_train, len(dataset.x_test), seed=_SEED.value, max_per_side=_MAX_PER_SIDE.value
        )
        reference = None
        if _REF_MODELS.value > 0:
            arch = _REF_MODEL.value or _model_name(model_dir)
            if arch not in MODELS:
                raise ValueError(
                    f"cannot tell the reference architecture (got {arch!r}); pass --reference_architecture "
                    f"from {MODELS}, or --reference_models=0"
                )
            reference = audit.train_reference_stats(
                dataset.x_train,
                dataset.y_train,
                dataset.x_test,
                dataset.y_test,
                dataset.num_classes,
                split,
                audit.ReferenceRecipe(model=arch, num_models=_REF_MODELS.value),
                seed=_SEED.value,
            )
        result = audit.audit_model(
            logits_fn, dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test, split, reference
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    record = result.as_dict()
    record.update(model_dir=model_dir, dataset=_DATASET.value, seed=_SEED.value)
    outputs.atomic_write_json(out_path, record)
    print(audit.summarize(result))
    print(f"[audit] wrote {out_path}")


def _model_name(model_dir: str) -> str | None:
    """The Keras model's name, which models.builders sets to the builder's name."""
    import tensorflow as tf

    try:
        return tf.keras.models.load_model(model_dir, compile=False).name
    except Exception:  # noqa: BLE001 - any failure means: unknown, ask the user
        return None


def run() -> None:
    cli.run(main, __name__)


if __name__ == "__main__":
    run()
