"""Membership inference: attack scores and metrics (numpy only; models are trained elsewhere).

An empirical view of what a trained model leaks; `training/membership_audit.py` trains the
reference models and calls these on a saved model.

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
    logits = as_logits(logits)
    return -_log_softmax(logits)[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]


def logit_scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y), computed as logit_y - logsumexp(other logits)."""
    logits = as_logits(logits)
    idx = np.arange(len(labels)), np.asarray(labels, dtype=np.int64)
    true = logits[idx]
    others = logits.copy()
    others[idx] = -np.inf
    top = others.max(axis=1)
    lse = top + np.log(np.exp(others - top[:, None]).sum(axis=1))
    return true - lse


def as_logits(logits: np.ndarray) -> np.ndarray:
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
