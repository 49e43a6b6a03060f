"""The comparison's table (results.md) and plot (privacy_utility.png), from the arm records."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from training.comparison.grid import ARMS, DP_ARMS, UNITS, ComparisonConfig
from training.metrics import higher_is_better

_LABELS = {
    "test_accuracy": "accuracy",
    "test_loss": "test loss",
    "test_auc": "AUC",
    "test_average_precision": "average precision",
    "test_balanced_accuracy": "balanced accuracy",
    "test_rmse": "RMSE",
    "test_mae": "MAE",
}


def metric_label(metric: str) -> str:
    """The column title of a test metric (test_recall_3: "recall of class 3")."""
    if metric.startswith("test_recall_"):
        return f"recall of class {metric.removeprefix('test_recall_')}"
    return _LABELS.get(metric, metric)


def _test_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every test metric some arm reported, in the order first seen (test_accuracy first)."""
    keys = ["test_accuracy"]
    for r in rows:
        keys.extend(k for k in r if k.startswith("test_") and k not in keys)
    return keys


def _mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds, one row per (arm, target epsilon), in grid order."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["target_epsilon"]), []).append(r)
    out = []
    for (arm, target), rs in groups.items():
        agg: dict[str, Any] = {"arm": arm, "unit": rs[0]["unit"], "target_epsilon": target, "seeds": len(rs)}
        for key in (
            "epsilon",
            *_test_keys(rows),
            "attack_auc",
            "attack_tpr_at_1pct_fpr",
            "lira_auc",
            "lira_tpr_at_1pct_fpr",
            "canary_auc",
            "epsilon_lower_bound",
            "epsilon_audit_ceiling",
            "wall_time_s",
        ):
            m, s, _ = _mean_std([r.get(key) for r in rs])
            agg[key], agg[key + "_std"] = m, s
        agg["noise_multiplier"] = _mean_std([r.get("noise_multiplier") for r in rs])[0]
        agg["audit_exceeds_claim"] = any(r.get("audit_exceeds_claim") for r in rs)
        out.append(agg)
    order = {a: i for i, a in enumerate(ARMS)}
    out.sort(key=lambda a: (order[a["arm"]], a["target_epsilon"] or 0.0))
    return out


def _fmt(mean: float, std: float, seeds: int, digits: int = 3) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if seeds > 1 else "")


def _bound(a: Mapping[str, Any]) -> str:
    text = _fmt(a["epsilon_lower_bound"], a["epsilon_lower_bound_std"], a["seeds"], 2)
    return text + (" ⚠ EXCEEDS ε" if a["audit_exceeds_claim"] else "")


def results_table(
    rows: Sequence[Mapping[str, Any]], timing: bool = False, metric: str = "test_accuracy"
) -> list[str]:
    """The markdown table lines (header first), one row per (arm, target epsilon).

    The headline `metric` stands where accuracy stands by default; accuracy follows it when it is
    another one. `timing` adds a wall-time column from rows that carry `wall_time_s` (joined from
    not_for_release/timings.csv by the data holder): the released rows have none, since a DP arm's
    time depends on its private data."""
    utility = [metric] if metric == "test_accuracy" else [metric, "test_accuracy"]
    lines = [
        "| arm | unit | target ε | achieved ε | ε lower bound (audit) | noise | "
        + "".join(f"{metric_label(m)} | " for m in utility)
        + "loss-attack AUC | LiRA AUC | LiRA TPR@1%FPR | canary AUC |"
        + (" wall time (s) |" if timing else ""),
        "|---|---|---|---|---|---|" + "---|" * len(utility) + "---|---|---|---|" + ("---|" if timing else ""),
    ]
    for a in aggregate(rows):
        n = a["seeds"]
        target = "—" if a["target_epsilon"] is None else f"{a['target_epsilon']:g}"
        eps = (
            "∞ (non-private)"
            if not math.isfinite(a["epsilon"])
            else _fmt(a["epsilon"], a["epsilon_std"], n, 2)
        )
        noise = "—" if a["target_epsilon"] is None else f"{a['noise_multiplier']:.3g}"
        lines.append(
            f"| {a['arm']} | {a['unit']} | {target} | {eps} | {_bound(a)} | {noise} | "
            + "".join(f"{_fmt(a.get(m, math.nan), a.get(m + '_std', math.nan), n)} | " for m in utility)
            + f"{_fmt(a['attack_auc'], a['attack_auc_std'], n)} | "
            f"{_fmt(a['lira_auc'], a['lira_auc_std'], n)} | "
            f"{_fmt(a['lira_tpr_at_1pct_fpr'], a['lira_tpr_at_1pct_fpr_std'], n)} | "
            f"{_fmt(a['canary_auc'], a['canary_auc_std'], n)} |"
            + (f" {_fmt(a['wall_time_s'], a['wall_time_s_std'], n, 1)} |" if timing else "")
        )
    return lines


def _ceiling(rows: Sequence[Mapping[str, Any]]) -> str:
    values = [float(r["epsilon_audit_ceiling"]) for r in rows if r.get("epsilon_audit_ceiling") is not None]
    return f"ε = {max(values):.2f}" if values else "n/a"


def _headline_text(metric: str, config: ComparisonConfig) -> str:
    """Why the table leads with `metric` (every arm's other test metrics are in results.csv)."""
    why = (
        "chosen by --metric=auto: AUC for binary labels whose positive class is under 20% of the rows "
        "by a DP or public estimate (a table's: the one its DP arm released), accuracy otherwise"
        if config.metric == "auto"
        else "chosen by --metric"
    )
    direction = "higher is better" if higher_is_better(metric) else "lower is better"
    return (
        f"Headline metric: {metric_label(metric)} ({metric}; {direction}), {why}; every test metric "
        "of every arm, measured on the held-out test split, is in results.csv."
    )


def results_markdown(
    rows: Sequence[Mapping[str, Any]], config: ComparisonConfig, metric: str = "test_accuracy"
) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"# Centralized DP vs federated DP on {config.dataset} ({config.model})",
        "",
        f"delta = {config.delta:g}; accountant {config.accountant.upper()}; seeds {seeds} "
        f"(mean ± std when more than one); federated DP clipping: {config.fed_aggregator}. "
        "ε lower bound: the one-run canary audit (Steinke, Nasr & Jagielski 2023) at 95% confidence, "
        f"from {config.audit_canaries} white-box canaries per arm (gradient canaries centrally, canary "
        "users through the DP aggregator federated), each inserted with probability 1/2 and counted "
        "as a privacy unit. It is a floor found by one attack, not the true ε: a DP arm must stay "
        "at or below its achieved ε, and a row marked ⚠ is evidence of a bug. With these canaries the "
        f"audit cannot show more than {_ceiling(rows)} (every guess right), so it cannot refute a "
        "claim above that. "
        "Secondary, membership inference against held-out non-members (balanced): loss-attack = "
        "loss-threshold attack (Yeom et al.); LiRA = offline LiRA with reference models (0.5 = no "
        "leakage detected); canary AUC = black-box loss attack on out-of-distribution canaries "
        "(examples centrally, clients federated). No timings: a DP arm's depend on its private data "
        "and no guarantee covers them (they are in not_for_release/timings.csv, for the data holder).",
        "",
        _headline_text(metric, config),
        "",
        *results_table(rows, metric=metric),
    ]
    baselines = {r["seed"]: r.get("null_loss_auc") for r in rows if r.get("null_loss_auc") is not None}
    if baselines:
        values = ", ".join(f"{float(v):.3f} (seed {k})" for k, v in sorted(baselines.items()))
        lines += [
            "",
            "Split baseline: the loss-threshold AUC of the LiRA reference models, which saw neither the "
            f"members nor the non-members, is {values}. A fixed train/test split is rarely exactly "
            "balanced in difficulty, so read attack AUCs against this value rather than 0.5.",
        ]
    lines += [
        "",
        "Units: *example* = add/remove one training example; *user* = add/remove one client's whole "
        "local dataset. fed_dp_example puts exactly one example on each client, so its user-level "
        "guarantee is an example-level one and compares directly with central_dp.",
        "",
    ]
    return "\n".join(lines)


_COLORS = {
    "central_dp": "tab:blue",
    "fed_dp": "tab:orange",
    "fed_dp_example": "tab:green",
    "central_label_ldp": "tab:purple",
    "central_dp_tuned": "tab:cyan",
    "central_nondp": "tab:blue",
    "fed_nondp": "tab:orange",
}


def _accuracy_panel(ax, agg: list[dict[str, Any]], metric: str = "test_accuracy") -> None:
    """The headline test metric against achieved epsilon (log scale); non-DP arms as dashed lines."""
    import matplotlib.ticker

    for arm in DP_ARMS:
        pts = sorted(
            (a for a in agg if a["arm"] == arm and math.isfinite(a["epsilon"])), key=lambda a: a["epsilon"]
        )
        if pts:
            level = "local label" if arm == "central_label_ldp" else UNITS[arm].split(" ")[0]
            ax.errorbar(
                [a["epsilon"] for a in pts],
                [a.get(metric, math.nan) for a in pts],
                yerr=[a.get(metric + "_std", math.nan) for a in pts],
                marker="o",
                capsize=3,
                color=_COLORS[arm],
                label=f"{arm} ({level}-level)",
            )
    for a in (a for a in agg if a["arm"] in ("central_nondp", "fed_nondp")):
        value = a.get(metric, math.nan)
        if math.isfinite(value):
            ax.axhline(value, linestyle="--", color=_COLORS[a["arm"]], label=f"{a['arm']} (no DP)")
    ticks = sorted({round(a["epsilon"], 1) for a in agg if math.isfinite(a["epsilon"])})
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(ticks, [f"{e:g}" for e in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("achieved ε (log scale)")
    ax.set_title(f"test {metric_label(metric)}" if metric != "test_loss" else "test loss")


def _audit_panel(ax, agg: list[dict[str, Any]]) -> None:
    """Measured lower bound against proven epsilon, with the diagonal: a point above it is a bug.

    Non-private arms (proven ε = ∞) sit in a column right of every finite ε.
    """
    audited = [a for a in agg if math.isfinite(a["epsilon_lower_bound"])]
    finite = [a["epsilon"] for a in audited if math.isfinite(a["epsilon"])]
    top = max(finite + [a["epsilon_lower_bound"] for a in audited] + [1.0])
    inf_x = top * 1.25
    ax.plot([0, top * 1.1], [0, top * 1.1], linestyle=":", color="gray", label="lower bound = proven ε")
    for arm in ARMS:
        pts = sorted((a for a in audited if a["arm"] == arm), key=lambda a: a["epsilon"])
        if not pts:
            continue
        shift = {"central_nondp": 0.97, "fed_nondp": 1.03}.get(arm, 1.0)  # side by side, not on top
        x = [a["epsilon"] if math.isfinite(a["epsilon"]) else inf_x * shift for a in pts]
        ax.errorbar(
            x,
            [a["epsilon_lower_bound"] for a in pts],
            yerr=[a["epsilon_lower_bound_std"] for a in pts],
            marker="s" if arm.endswith("nondp") else "o",
            linestyle="none" if arm.endswith("nondp") else "-",
            capsize=3,
            color=_COLORS[arm],
            label=arm,
        )
        for xi, a in zip(x, pts):
            if a["audit_exceeds_claim"]:
                ax.annotate("EXCEEDS", (xi, a["epsilon_lower_bound"]), color="red", fontsize=8)
    ceiling = max(
        (a["epsilon_audit_ceiling"] for a in audited if math.isfinite(a["epsilon_audit_ceiling"])),
        default=None,
    )
    if ceiling:
        ax.axhline(
            ceiling, linestyle="--", color="gray", linewidth=0.8, label="audit ceiling (every guess right)"
        )
    ticks = sorted({round(e, 1) for e in finite})
    ax.set_xticks(ticks + [inf_x], [f"{e:g}" for e in ticks] + ["∞\n(no DP)"])
    ax.set_xlim(0, inf_x * 1.08)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("proven ε (accountant)")
    ax.set_ylabel("measured ε lower bound")
    ax.set_title("one-run canary audit (95% confidence)")


def write_plot(rows: Sequence[Mapping[str, Any]], path: str, metric: str = "test_accuracy") -> None:
    """Left: the headline metric against achieved epsilon. Right: the audit's lower bound against
    proven epsilon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = aggregate(rows)
    audited = any(math.isfinite(a["epsilon_lower_bound"]) for a in agg)
    fig, axes = plt.subplots(1, 2 if audited else 1, figsize=(11 if audited else 6, 4.2), squeeze=False)
    _accuracy_panel(axes[0][0], agg, metric)
    if audited:
        _audit_panel(axes[0][1], agg)
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".tmp-" + os.path.basename(path))
    try:
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
