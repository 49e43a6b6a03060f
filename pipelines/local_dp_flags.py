"""The data-level (local DP) flags, shared by both training binaries."""

from __future__ import annotations

from absl import flags

LABEL_EPSILON = flags.DEFINE_float(
    "local_dp_label_epsilon", None, "Randomized response on each training label with this local epsilon."
)
FEATURE_EPSILON = flags.DEFINE_float(
    "local_dp_feature_epsilon", None, "Noise on each clipped training feature vector with this local epsilon."
)
FEATURE_CLIP = flags.DEFINE_float(
    "local_dp_feature_clip", None, "Norm bound applied to each feature vector before feature noise."
)
FEATURE_MECHANISM = flags.DEFINE_enum(
    "local_dp_feature_mechanism",
    "laplace",
    ["laplace", "gaussian"],
    "Feature noise: Laplace (L1 clip), Gaussian (L2).",
)
FEATURE_DELTA = flags.DEFINE_float("local_dp_feature_delta", 1e-5, "Delta of the Gaussian feature mechanism.")

HOLDERS = (LABEL_EPSILON, FEATURE_EPSILON, FEATURE_CLIP, FEATURE_MECHANISM, FEATURE_DELTA)

flags.register_validator("local_dp_label_epsilon", lambda v: v is None or v > 0, "must be > 0")
flags.register_validator("local_dp_feature_epsilon", lambda v: v is None or v > 0, "must be > 0")
flags.register_validator("local_dp_feature_clip", lambda v: v is None or v > 0, "must be > 0")
flags.register_multi_flags_validator(
    ["local_dp_feature_epsilon", "local_dp_feature_clip"],
    lambda f: (f["local_dp_feature_epsilon"] is None) == (f["local_dp_feature_clip"] is None),
    "--local_dp_feature_epsilon and --local_dp_feature_clip go together (noise needs a norm bound)",
)


def local_dp_config():
    """LocalDpConfig from the flags, or None when no local DP is asked for."""
    from privacy.local_dp import LocalDpConfig

    if LABEL_EPSILON.value is None and FEATURE_EPSILON.value is None:
        return None
    return LocalDpConfig(
        label_epsilon=LABEL_EPSILON.value,
        feature_epsilon=FEATURE_EPSILON.value,
        feature_clip=FEATURE_CLIP.value,
        feature_mechanism=FEATURE_MECHANISM.value,
        feature_delta=FEATURE_DELTA.value,
    )
