"""Membership-inference audit of a saved classifier on the split it was trained on.

  python -m pipelines.audit --model_dir=runs/centralized/model --dataset=digits --seed=0

Members are training examples, non-members held-out test examples (balanced). The split is
rebuilt with load_dataset(dataset, data_dir, seed=seed), which is the split the training
pipelines used for that seed. Prints the attacks' AUC and TPR at 1% FPR and writes
membership_audit.json next to the model folder (the run's own audit.json is the canary audit of
its training).
"""

from __future__ import annotations

import os

from absl import flags

from models.builders import MODELS
from models.specs import spec_problem
from pipelines import _app, _flags

_DATA = _flags.define_dataset_flags(help_text="Dataset the model was trained on.", files=False)
_SEED = _flags.define_seed_flag("The training run's seed (it fixes the train/test split).")
flags.adopt_module_key_flags(_flags)  # the shared flags above are this binary's too (--help)
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Saved model folder (Keras SavedModel, logits).")
_REF_MODELS = flags.DEFINE_integer(
    "reference_models", 4, "Reference models for offline LiRA (0: loss-threshold attack only).", lower_bound=0
)
_REF_MODEL = flags.DEFINE_string(
    "reference_architecture",
    None,
    f"Model of the reference models: a built-in ({', '.join(MODELS)}), PATH.py:FUNCTION or PATH.keras, as "
    "--model of the training run (default: the saved model's name, for a built-in).",
)
_MAX_PER_SIDE = flags.DEFINE_integer("max_per_side", None, "Cap on members (= non-members) audited.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Where to write the JSON (default: <model_dir>/../membership_audit.json)."
)

flags.mark_flag_as_required("model_dir")
flags.register_validator("model_dir", lambda v: v is None or os.path.isdir(v), "--model_dir must be a folder")
_flags.positive("max_per_side")


def main(argv: list[str]) -> None:
    del argv  # extra arguments were refused by _app.run
    _app.import_tensorflow()  # before anything imports TF (see pipelines/_app.py)
    from data.datasets import load_dataset
    from privacy.auditing.membership import summarize
    from training.atomic_files import atomic_write_json
    from training.membership_audit import MembershipAuditor, load_logits_fn, saved_model_name
    from training.run_folder import check_output_dir

    model_dir = os.path.normpath(_MODEL_DIR.value)
    run_dir = os.path.dirname(os.path.abspath(model_dir))
    out_path = _OUTPUT.value or os.path.join(run_dir, "membership_audit.json")
    with _app.bad_input():
        check_output_dir(os.path.dirname(os.path.abspath(out_path)))
        images = {"image_size": _DATA.image_size.value, "color_mode": _DATA.color_mode.value}
        dataset = load_dataset(_DATA.dataset.value, _DATA.data_dir.value, seed=_SEED.value, **images)
        if dataset.task != "classification":
            raise ValueError("membership audit needs a classification dataset")
        if dataset.table is not None:  # its model takes raw columns, its references would need the same fit
            raise ValueError("the membership audit does not take tables yet (their models take raw columns)")
        logits_fn = load_logits_fn(model_dir)
        arch = _REF_MODEL.value or (saved_model_name(model_dir) if _REF_MODELS.value else "mlp")
        if _REF_MODEL.value is None and arch not in MODELS:
            raise ValueError(
                f"cannot tell the reference architecture (got {arch!r}); pass --reference_architecture "
                f"(a built-in of {MODELS}, or the training run's --model file), or --reference_models=0"
            )
        problem = spec_problem(arch, allow_objects=False)
        if problem:
            raise ValueError(f"--reference_architecture: {problem}")
        auditor = MembershipAuditor(arch, _REF_MODELS.value, _MAX_PER_SIDE.value)
        result = auditor.audit(logits_fn, dataset, _SEED.value)
    record = result.as_dict()
    record.update(model_dir=model_dir, dataset=_DATA.dataset.value, seed=_SEED.value)
    atomic_write_json(out_path, record, prefix=".audit-tmp-")  # not the run's: no lock held
    print(summarize(result))
    print(f"[audit] wrote {out_path}")


def run() -> None:
    _app.run(main, __name__)


if __name__ == "__main__":
    run()
