"""Membership-inference audit: an empirical lower bound on what a trained model leaks.

An epsilon is an upper bound proved about the training algorithm; an attack measures what a
concrete adversary recovers from one concrete model. A sceptic is convinced when the DP
model's attack curve sits near the diagonal while the non-private one does not.

Setup (balanced): members are training examples, non-members are held-out (test) examples,
the same number of each, drawn with a fixed seed. Training examples outside the audit's
member sample form a *reference population*: they are never scored, so reference models
trained on them have seen none of the audited points.

Attacks (higher score = "member"):

* ``loss_threshold`` (Yeom et al., 2018): score = -cross-entropy loss of the true label.
* ``lira_offline`` (Carlini et al., 2022, offline variant with a global variance): a few
  reference models trained on random halves of the reference population give, for every
  audited point, the mean of its logit-scaled confidence phi = log(p_y / (1 - p_y)) when
  the point is OUT of training. The score is how far the target's phi lies above that
  per-example OUT mean, after mapping the reference means onto the target's scale with a
  label-free affine fit (see `recalibrated_out_mean`). It calibrates away per-example
  difficulty, which the plain loss attack cannot: on a fixed split the members may simply be
  easier by chance, and the loss attack reports that as leakage (ReferenceStats.null_loss_auc).

Metrics are computed here from the raw scores, with ties handled explicitly:
AUC = P(s_member > s_nonmember) + 0.5 P(tie); TPR at FPR <= alpha is the largest TPR over
thresholds "score >= t" (t on distinct score values, so tied points move together) whose
FPR does not exceed alpha. No interpolation between ROC points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

ATTACKS = ("loss_threshold", "lira_offline")
DEFAULT_FPR = 0.01

LogitsFn = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- metrics on scores


def roc_curve(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) for every threshold 'score >= t', t over distinct scores, plus (0, 0).

    Points are ordered by decreasing threshold, so both arrays are non-decreasing.
    """
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    n = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    _check_scores(m, n)
    thresholds = np.unique(np.concatenate([m, n]))[::-1]  # descending, distinct
    m_sorted, n_sorted = np.sort(m), np.sort(n)
    # count of scores >= t = len - (count of scores < t)
    tp = len(m) - np.searchsorted(m_sorted, thresholds, side="left")
    fp = len(n) - np.searchsorted(n_sorted, thresholds, side="left")
    tpr = np.concatenate([[0.0], tp / len(m)])
    fpr = np.concatenate([[0.0], fp / len(n)])
    return fpr, tpr


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """P(member score > non-member score) + 0.5 P(tie) (the Mann-Whitney statistic)."""
    from scipy.stats import rankdata

    m = np.asarray(member_scores, dtype=np.float64).ravel()
    n = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    _check_scores(m, n)
    ranks = rankdata(np.concatenate([m, n]))  # average ranks: ties count one half
    u = ranks[: len(m)].sum() - len(m) * (len(m) + 1) / 2.0
    return float(u / (len(m) * len(n)))


def tpr_at_fpr(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, max_fpr: float = DEFAULT_FPR
) -> float:
    """Largest TPR of a threshold attack whose FPR is at most `max_fpr` (no interpolation).

    With n non-members, FPR <= alpha allows floor(alpha * n) false positives; with fewer than
    1/alpha non-members the only admissible threshold is the one with zero false positives.
    """
    if not 0 <= max_fpr <= 1:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    fpr, tpr = roc_curve(member_scores, nonmember_scores)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def _check_scores(m: np.ndarray, n: np.ndarray) -> None:
    if len(m) == 0 or len(n) == 0:
        raise ValueError("membership audit needs at least one member and one non-member score")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(n))):
        raise ValueError("membership scores must be finite (is the model output NaN?)")


@dataclasses.dataclass(frozen=True)
class AttackResult:
    attack: str
    auc: float
    tpr_at_fpr: float
    fpr: float  # the FPR bound used for tpr_at_fpr
    advantage: float  # max over thresholds of TPR - FPR (membership advantage)
    num_members: int
    num_nonmembers: int


def evaluate_attack(
    name: str, member_scores: np.ndarray, nonmember_scores: np.ndarray, max_fpr: float = DEFAULT_FPR
) -> AttackResult:
    fpr, tpr = roc_curve(member_scores, nonmember_scores)
    return AttackResult(
        attack=name,
        auc=auc(member_scores, nonmember_scores),
        tpr_at_fpr=tpr_at_fpr(member_scores, nonmember_scores, max_fpr),
        fpr=max_fpr,
        advantage=float(np.max(tpr - fpr)),
        num_members=int(np.size(member_scores)),
        num_nonmembers=int(np.size(nonmember_scores)),
    )


# ---------------------------------------------------------------- per-example signals


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example softmax cross-entropy of the true label (numerically stable)."""
    logits = _as_logits(logits)
    return -_log_softmax(logits)[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y), computed as logit_y - logsumexp(other logits)."""
    logits = _as_logits(logits)
    idx = np.arange(len(labels)), np.asarray(labels, dtype=np.int64)
    true = logits[idx]
    others = logits.copy()
    others[idx] = -np.inf
    top = others.max(axis=1)
    lse = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
    return true - lse


def _as_logits(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"membership audit needs class logits of shape (n, classes>=2), got {logits.shape}; "
            "regression models are not audited"
        )
    return logits


# ---------------------------------------------------------------- the audit


@dataclasses.dataclass(frozen=True)
class AuditSplit:
    """Indices into the training set (members, reference) and the test set (non-members)."""

    members: np.ndarray
    nonmembers: np.ndarray
    reference: np.ndarray


def audit_split(num_train: int, num_test: int, seed: int = 0, max_per_side: int | None = None) -> AuditSplit:
    """Balanced members/non-members (as many as the smaller side allows) and the rest as reference."""
    if num_train < 2 or num_test < 1:
        raise ValueError(f"membership audit needs train and test examples, got {num_train} and {num_test}")
    k = min(num_train - 1, num_test) if max_per_side is None else min(num_train - 1, num_test, max_per_side)
    rng = np.random.default_rng(seed)
    train_perm = rng.permutation(num_train)
    return AuditSplit(
        members=np.sort(train_perm[:k]),
        nonmembers=np.sort(rng.permutation(num_test)[:k]),
        reference=np.sort(train_perm[k:]),
    )


@dataclasses.dataclass(frozen=True)
class ReferenceRecipe:
    """How reference (shadow) models are trained: a plain, non-private recipe.

    Offline LiRA only needs each audited point's OUT distribution, so the reference models
    need not use the target's (possibly DP) optimizer; a mismatch can only weaken the attack,
    never make the measured leakage an overestimate.
    """

    model: str = "mlp"
    num_models: int = 4
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3

    def __post_init__(self) -> None:
        if self.num_models < 1:
            raise ValueError(f"num_models must be >= 1, got {self.num_models}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("reference recipe: epochs, batch_size and learning_rate must be > 0")


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
    """Per-audited-point OUT statistics of phi, from reference models (reusable across targets)."""

    member_mean: np.ndarray
    nonmember_mean: np.ndarray
    std: float  # global (pooled) std: few reference models cannot estimate per-example variances
    num_models: int
    # Loss-threshold AUC of the reference models themselves, which saw neither side: the split's
    # own baseline. A fixed split can be a little "easier" on one side by chance (e.g. 0.53 on
    # digits seed 0); target AUCs are best read against this value, not against 0.5.
    null_loss_auc: float = 0.5


def train_reference_stats(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int,
    split: AuditSplit,
    recipe: ReferenceRecipe = ReferenceRecipe(),
    seed: int = 0,
) -> ReferenceStats:
    """Trains `recipe.num_models` reference models on random halves of the reference population."""
    import tensorflow as tf

    from models.builders import build_model

    if len(split.reference) < 2:
        raise ValueError("lira_offline needs reference examples (training examples outside the audit)")
    rng = np.random.default_rng(seed + 7919)
    x_mem, y_mem = x_train[split.members], y_train[split.members]
    x_non, y_non = x_test[split.nonmembers], y_test[split.nonmembers]
    phis_mem, phis_non, null_aucs = [], [], []
    for i in range(recipe.num_models):
        half = rng.choice(split.reference, size=max(1, len(split.reference) // 2), replace=False)
        model = build_model(recipe.model, x_train.shape[1:], num_classes, seed=seed * 1000 + i + 1)
        model.compile(
            optimizer=tf.keras.optimizers.Adam(recipe.learning_rate),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x_train[half], y_train[half], epochs=recipe.epochs, batch_size=recipe.batch_size, verbose=0)
        logits_mem, logits_non = _predict(model, x_mem), _predict(model, x_non)
        phis_mem.append(logit_scaled_confidence(logits_mem, y_mem))
        phis_non.append(logit_scaled_confidence(logits_non, y_non))
        null_aucs.append(auc(-cross_entropy(logits_mem, y_mem), -cross_entropy(logits_non, y_non)))
    phi_mem, phi_non = np.stack(phis_mem), np.stack(phis_non)  # (models, k)
    all_phi = np.concatenate([phi_mem, phi_non], axis=1)
    if recipe.num_models > 1:
        std = float(np.sqrt(np.mean(np.var(all_phi, axis=0, ddof=1))))
    else:
        std = float(np.std(all_phi))
    return ReferenceStats(
        phi_mem.mean(0), phi_non.mean(0), max(std, 1e-6), recipe.num_models, float(np.mean(null_aucs))
    )


def _predict(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    )


def recalibrated_out_mean(target_phi: np.ndarray, reference_mean: np.ndarray) -> np.ndarray:
    """The reference OUT means mapped affinely onto the target's confidence scale.

    Reference models are trained non-privately; a DP target is far less confident and depends
    less on per-example difficulty, so subtracting the raw reference mean over-corrects (AUCs
    fall below 0.5 whenever the split's members happen to be easier). A least-squares fit
    phi_target ~ a + b * mu_ref over all audited points uses no membership labels, so it is a
    legitimate attacker step; with a reference-like target it gives b ~ 1 (plain offline LiRA).
    """
    mu = np.asarray(reference_mean, dtype=np.float64)
    phi = np.asarray(target_phi, dtype=np.float64)
    if np.var(mu) < 1e-12:
        return np.full_like(phi, phi.mean())
    b, a = np.polyfit(mu, phi, 1)
    return a + b * mu


@dataclasses.dataclass(frozen=True)
class AuditResult:
    attacks: dict[str, AttackResult]
    num_members: int
    num_nonmembers: int
    member_accuracy: float  # accuracy on the audited members (train) ...
    nonmember_accuracy: float  # ... and non-members (test): the generalization gap
    null_loss_auc: float | None = None  # loss AUC of models that saw neither side (see ReferenceStats)

    def as_dict(self) -> dict:
        return {
            "attacks": {k: dataclasses.asdict(v) for k, v in self.attacks.items()},
            "num_members": self.num_members,
            "num_nonmembers": self.num_nonmembers,
            "member_accuracy": self.member_accuracy,
            "nonmember_accuracy": self.nonmember_accuracy,
            "null_loss_auc": self.null_loss_auc,
            "setup": "members = training examples, non-members = held-out test examples (balanced); "
            "score >= threshold means 'member'; AUC counts ties as one half; TPR at FPR <= "
            f"{DEFAULT_FPR:g} without interpolation",
        }


def audit_logits(
    member_logits: np.ndarray,
    member_labels: np.ndarray,
    nonmember_logits: np.ndarray,
    nonmember_labels: np.ndarray,
    reference: ReferenceStats | None = None,
    max_fpr: float = DEFAULT_FPR,
) -> AuditResult:
    """Runs the attacks on a target model's logits for the audited points."""
    attacks = {
        "loss_threshold": evaluate_attack(
            "loss_threshold",
            -cross_entropy(member_logits, member_labels),
            -cross_entropy(nonmember_logits, nonmember_labels),
            max_fpr,
        )
    }
    if reference is not None:
        if len(reference.member_mean) != len(member_labels) or len(reference.nonmember_mean) != len(
            nonmember_labels
        ):
            raise ValueError("reference statistics were computed for a different audit split")
        phi = np.concatenate(
            [
                logit_scaled_confidence(member_logits, member_labels),
                logit_scaled_confidence(nonmember_logits, nonmember_labels),
            ]
        )
        out_mean = recalibrated_out_mean(
            phi, np.concatenate([reference.member_mean, reference.nonmember_mean])
        )
        scores = (phi - out_mean) / reference.std
        k = len(member_labels)
        attacks["lira_offline"] = evaluate_attack("lira_offline", scores[:k], scores[k:], max_fpr)
    return AuditResult(
        attacks=attacks,
        num_members=len(member_labels),
        num_nonmembers=len(nonmember_labels),
        member_accuracy=float(np.mean(np.argmax(member_logits, 1) == member_labels)),
        nonmember_accuracy=float(np.mean(np.argmax(nonmember_logits, 1) == nonmember_labels)),
        null_loss_auc=None if reference is None else reference.null_loss_auc,
    )


def audit_model(
    logits_fn: LogitsFn,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    split: AuditSplit,
    reference: ReferenceStats | None = None,
    max_fpr: float = DEFAULT_FPR,
) -> AuditResult:
    """Audits a black-box classifier (`logits_fn`: inputs -> logits) on a fixed split."""
    return audit_logits(
        logits_fn(x_train[split.members]),
        y_train[split.members],
        logits_fn(x_test[split.nonmembers]),
        y_test[split.nonmembers],
        reference,
        max_fpr,
    )


def keras_logits_fn(model, batch_size: int = 1024) -> LogitsFn:
    return lambda x: _predict(model, x, batch_size)


def load_logits_fn(model_dir: str) -> LogitsFn:
    """Loads a saved model (Keras SavedModel with a logits output) as a black box.

    Falls back to the raw SavedModel signature when the Keras object cannot be rebuilt
    (e.g. a model saved from a DP training wrapper with custom classes).
    """
    import os

    import tensorflow as tf

    if not os.path.isdir(model_dir):
        raise ValueError(f"model folder not found: {model_dir}")
    try:
        model = tf.keras.models.load_model(model_dir, compile=False)
        return keras_logits_fn(model)
    except Exception as keras_error:  # noqa: BLE001 - any rebuild failure: use the raw signature
        try:
            loaded = tf.saved_model.load(model_dir)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot load a SavedModel from {model_dir}: {e}") from keras_error
        sig = loaded.signatures.get("serving_default")
        if sig is None:
            raise ValueError(f"{model_dir} has no serving_default signature") from keras_error
        (input_name,) = sig.structured_input_signature[1].keys()

        def fn(x: np.ndarray) -> np.ndarray:
            outs = []
            for i in range(0, len(x), 1024):
                out = sig(**{input_name: tf.constant(x[i : i + 1024], dtype=tf.float32)})
                outs.append(np.asarray(next(iter(out.values()))))
            return np.concatenate(outs)

        return fn


def summarize(result: AuditResult, attacks: Sequence[str] = ATTACKS) -> str:
    lines = [
        f"membership audit: {result.num_members} members vs {result.num_nonmembers} non-members "
        f"(member acc {result.member_accuracy:.3f}, non-member acc {result.nonmember_accuracy:.3f})"
    ]
    if result.null_loss_auc is not None:
        lines.append(f"  split baseline: loss AUC of models that saw neither side {result.null_loss_auc:.3f}")
    for name in attacks:
        if name in result.attacks:
            a = result.attacks[name]
            lines.append(
                f"  {name:15s} AUC {a.auc:.3f}  TPR@{a.fpr:g}FPR {a.tpr_at_fpr:.3f}  "
                f"advantage {a.advantage:.3f}"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------- canaries


@dataclasses.dataclass(frozen=True)
class CanarySet:
    """Mislabeled training examples, half of them inserted into training (the members).

    Natural examples barely leak on small, well-generalizing tasks, so a membership AUC near
    the split baseline says little. Canaries (Jagielski et al. 2020; Nasr et al. 2021) are the
    standard worst-case probe: a non-private model memorizes an inserted wrong label, while DP
    bounds how much any single record, canaries included, can change the model.
    """

    x: np.ndarray
    wrong_labels: np.ndarray
    inserted: np.ndarray  # bool: True for the canaries that are in the training set


def plant_canaries(
    x_train: np.ndarray, y_train: np.ndarray, num_classes: int, num_canaries: int, seed: int
) -> tuple[np.ndarray, np.ndarray, CanarySet]:
    """Training set with `num_canaries` examples turned into canaries, half of them kept.

    The canary pool is drawn from the training set and removed from it; each canary gets a
    uniformly random wrong label; a random half (the members) go back into training with
    that wrong label, the other half (the non-members) are left out.
    """
    if num_canaries < 2 or num_canaries % 2 or num_canaries > len(x_train) // 2:
        raise ValueError(f"num_canaries must be even, >= 2 and <= N/2, got {num_canaries}")
    rng = np.random.default_rng([seed, 0xCA1A])
    pool = rng.choice(len(x_train), num_canaries, replace=False)
    wrong = (y_train[pool] + rng.integers(1, num_classes, num_canaries)) % num_classes
    inserted = np.zeros(num_canaries, bool)
    inserted[rng.permutation(num_canaries)[: num_canaries // 2]] = True
    keep = np.ones(len(x_train), bool)
    keep[pool] = False
    x_new = np.concatenate([x_train[keep], x_train[pool[inserted]]])
    y_new = np.concatenate([y_train[keep], wrong[inserted].astype(y_train.dtype)])
    return x_new, y_new, CanarySet(x_train[pool], wrong.astype(y_train.dtype), inserted)


def canary_audit(logits_fn: LogitsFn, canaries: CanarySet, max_fpr: float = DEFAULT_FPR) -> AttackResult:
    """Loss-threshold attack on the canaries' wrong labels: inserted vs left-out canaries."""
    scores = -cross_entropy(_as_logits(logits_fn(canaries.x)), canaries.wrong_labels)
    return evaluate_attack("canary_loss", scores[canaries.inserted], scores[~canaries.inserted], max_fpr)
