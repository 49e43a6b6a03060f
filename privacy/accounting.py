"""Config -> DpEvent -> epsilon, target epsilon -> noise, and per-epoch/per-round ledgers.

Every function here takes the same frozen config that drives sampling, so the event we
account for is built from the sampling the run really used:

* Poisson example (or client) sampling: ``PoissonSampledDpEvent`` composed per step.
  Adjacency: add/remove one example (or one user).
* Shuffled fixed-size batches (centralized): no amplification by sampling is claimed. The
  permutation is data-independent, so under REPLACE-ONE adjacency the replaced example sits in
  the same batch of every epoch in both datasets: an epoch is one Gaussian mechanism on that
  batch's sum with sensitivity 2C (noise multiplier z/2), and ``epochs`` of them compose. (Under
  add/remove the argument fails: adding an example shifts every later batch boundary.) This
  epsilon is (much) larger than the Poisson number and is the honest one for ``model.fit``-style
  shuffling.
* Uniform fixed-size client sampling: ``SampledWithoutReplacementDpEvent``, which is
  defined for replace-one adjacency. Replacing a user moves the clipped sum by up to 2C,
  so the Gaussian event gets noise multiplier z/2.
* Tree aggregation (DP-FTRL): ``SingleEpochTreeAggregationDpEvent``; REPLACE_SPECIAL
  adjacency, RDP only; each user may contribute at most once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import dp_accounting

from privacy.config import DpFedAvgConfig, DpSgdConfig

PLD_DISCRETIZATION = 1e-3  # coarser than the default 1e-4: pessimistic, and 10x faster.
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]

ADJACENCY_TEXT = {
    "add_or_remove_one": "add/remove one {unit}",
    "replace_one": "replace one {unit}",
    "replace_special": "replace one {unit} with a special (zero) {unit}",
}


@dataclasses.dataclass(frozen=True)
class Guarantee:
    """What a run's privacy claim rests on: its DpEvent and how to read it.

    Built from the same frozen config that drives the sampler and the noise, and turned into
    epsilon, privacy.json and the statement text by `privacy.report` (one place for all runs).
    `event` is None for a non-private run.
    """

    event: dp_accounting.DpEvent | None
    accountant: str | None
    delta: float | None
    unit: str
    adjacency: str | None  # a key of ADJACENCY_TEXT
    sampling: str
    noise_multiplier: float
    l2_norm_clip: float | None
    steps: int
    notes: tuple[str, ...] = ()
    # delta already spent outside `event` (a table's partition selection): see `epsilon_of`
    spent_delta: float = 0.0

    @property
    def is_private(self) -> bool:
        return self.event is not None

    @property
    def adjacency_text(self) -> str | None:
        return None if self.adjacency is None else ADJACENCY_TEXT[self.adjacency].format(unit=self.unit)

    def epsilon(self) -> float:
        if self.event is None or self.noise_multiplier == 0:
            return math.inf
        return epsilon_of(self.event, self.accountant, self.adjacency, self.delta, self.spent_delta)

    def with_note(self, note: str) -> Guarantee:
        return dataclasses.replace(self, notes=(*self.notes, note))


def _neighboring(adjacency: str) -> dp_accounting.NeighboringRelation:
    return {
        "add_or_remove_one": dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        "replace_one": dp_accounting.NeighboringRelation.REPLACE_ONE,
        "replace_special": dp_accounting.NeighboringRelation.REPLACE_SPECIAL,
    }[adjacency]


def _plain_gaussians(event: dp_accounting.DpEvent) -> bool:
    """Whether `event` composes only unsampled Gaussian mechanisms (no sampling to amplify)."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return True
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return _plain_gaussians(event.event)
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return all(_plain_gaussians(e) for e in event.events)
    return False


def _accountant_for(
    name: str, adjacency: str, event: dp_accounting.DpEvent | None = None
) -> dp_accounting.PrivacyAccountant:
    """The accountant of `event` under `adjacency` (PLD: add/remove, or replace-one for plain Gaussians)."""
    rel = _neighboring(adjacency)
    if name == "rdp":
        return dp_accounting.rdp.RdpAccountant(RDP_ORDERS, neighboring_relation=rel)
    plain = event is not None and _plain_gaussians(event)
    if adjacency == "replace_special" or (adjacency == "replace_one" and not plain):
        raise ValueError(
            f"the PLD accountant here supports add/remove adjacency (and replace-one for unsampled "
            f"Gaussians) only, not {adjacency}; use --accountant=rdp"
        )
    if name != "pld":
        raise ValueError(f"unknown accountant {name!r}; expected rdp or pld")
    # A Gaussian event's noise multiplier is already relative to the relation's sensitivity
    # (z/2 for replace-one), so PLD's Gaussian analysis holds for either relation.
    return dp_accounting.pld.PLDAccountant(rel, value_discretization_interval=PLD_DISCRETIZATION)


# ---------------------------------------------------------------- centralized DP-SGD


def dp_sgd_event(config: DpSgdConfig, epochs: int | None = None) -> dp_accounting.DpEvent:
    """The DpEvent of `epochs` epochs (default: the whole run) of DP-SGD."""
    prefix = preprocessing_event(config.preprocessing_noise_multiplier, dp_sgd_adjacency(config))
    return _after_preprocessing(prefix, _dp_sgd_training_event(config, epochs))


def _dp_sgd_training_event(config: DpSgdConfig, epochs: int | None = None) -> dp_accounting.DpEvent:
    epochs = config.epochs if epochs is None else epochs
    z = config.noise_multiplier
    if config.sampling == "poisson":
        step = dp_accounting.PoissonSampledDpEvent(config.sampling_rate, dp_accounting.GaussianDpEvent(z))
        return dp_accounting.SelfComposedDpEvent(step, epochs * config.steps_per_epoch)
    # Shuffled fixed-size batches: one Gaussian release per example per epoch, no amplification;
    # replace-one moves that batch's sum by up to 2C, so the multiplier relative to it is z/2.
    return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z / 2), epochs)


def dp_sgd_adjacency(config: DpSgdConfig) -> str:
    return sampling_adjacency(config.sampling)


def sampling_adjacency(sampling: str) -> str:
    """DP-SGD's adjacency under `sampling`. Poisson: add/remove one example; shuffled fixed-size
    batches: replace one example."""
    return "add_or_remove_one" if sampling == "poisson" else "replace_one"


def epsilon_of(
    event: dp_accounting.DpEvent, accountant: str, adjacency: str, delta: float, spent_delta: float = 0.0
) -> float:
    """Epsilon at total `delta` of `event` under the named accountant and adjacency.

    `spent_delta`: the probability of a bad event outside `event` (Gaussian partition selection
    releasing a category only one unit holds). Conditioned on its absence the rest is `event`, so the
    whole is (eps + log(1/(1 - spent)), delta)-DP where eps is `event`'s epsilon at delta - spent."""
    acc = _accountant_for(accountant, adjacency, event)
    acc.compose(event)
    return float(acc.get_epsilon(delta - spent_delta)) - math.log1p(-spent_delta)


def preprocessing_event(noise_multiplier: float, adjacency: str) -> dp_accounting.DpEvent | None:
    """The DpEvent of a table's DP preprocessing release (`privacy.preprocessing`; None: none made).

    Its noise multiplier is relative to add/remove sensitivity 1; replacing a unit moves the release
    by at most 2 (one count down, one up, per histogram), so replace-one adjacencies use z/2."""
    if noise_multiplier <= 0:
        return None
    return dp_accounting.GaussianDpEvent(
        noise_multiplier if adjacency == "add_or_remove_one" else noise_multiplier / 2
    )


def _after_preprocessing(
    prefix: dp_accounting.DpEvent | None, event: dp_accounting.DpEvent
) -> dp_accounting.DpEvent:
    return event if prefix is None else dp_accounting.ComposedDpEvent([prefix, event])


def dp_sgd_epsilon(config: DpSgdConfig, epochs: int | None = None) -> float:
    if config.noise_multiplier == 0:
        return math.inf
    return epsilon_of(
        dp_sgd_event(config, epochs), config.accountant, dp_sgd_adjacency(config), config.delta,
        config.preprocessing_delta,
    )  # fmt: skip


def dp_sgd_guarantee(config: DpSgdConfig, epochs: int | None = None) -> Guarantee:
    """The guarantee of `epochs` epochs (default: all) of DP-SGD under `config`."""
    epochs = config.epochs if epochs is None else epochs
    note = (
        "Poisson sampling: each example joins each batch independently with probability "
        f"q={config.sampling_rate:.4g}; batch sizes vary."
        if config.sampling == "poisson"
        else "Shuffled fixed-size batches: no privacy amplification by sampling is claimed "
        "(each epoch counts as one Gaussian mechanism per example, sensitivity 2C under replace-one "
        "adjacency, i.e. noise multiplier z/2); the Poisson-sampling epsilon would NOT be valid "
        "for this run."
    )
    return Guarantee(
        event=dp_sgd_event(config, epochs),
        accountant=config.accountant,
        delta=config.delta,
        unit="example",
        adjacency=dp_sgd_adjacency(config),
        sampling=config.sampling,
        noise_multiplier=config.noise_multiplier,
        l2_norm_clip=config.l2_norm_clip,
        steps=epochs * config.steps_per_epoch,
        notes=(note, *_preprocessing_notes(config)),
        spent_delta=config.preprocessing_delta,
    )


def _preprocessing_notes(config: DpSgdConfig | DpFedAvgConfig) -> tuple[str, ...]:
    if config.preprocessing_noise_multiplier <= 0 and config.preprocessing_delta <= 0:
        return ()
    text = (
        f"The table's preprocessing statistics are one Gaussian release (noise multiplier "
        f"{config.preprocessing_noise_multiplier:.4g}) composed with training"
    )
    if config.preprocessing_delta > 0:
        text += f"; Gaussian partition selection of categories adds {config.preprocessing_delta:.3g} to delta"
    return (text + " (privacy.json: preprocessing).",)


def non_private_guarantee(unit: str, sampling: str, steps: int) -> Guarantee:
    return Guarantee(None, None, None, unit, None, sampling, 0.0, None, steps)


def _incremental_ledger(
    unit_event: dp_accounting.DpEvent, count: int, accountant: str, adjacency: str, delta: float,
    prefix: dp_accounting.DpEvent | None = None, spent_delta: float = 0.0,
) -> list[float]:  # fmt: skip
    """Cumulative epsilon after each of `count` compositions of `unit_event` (after `prefix`, the
    preprocessing release, when given; `spent_delta` as in `epsilon_of`).

    The unit's RDP curve (or PLD) is computed once and composed with itself, so a
    1,000-round ledger costs one mechanism analysis, not 1,000.
    """
    acc = _accountant_for(accountant, adjacency, unit_event)
    acc.compose(unit_event)
    start = None
    if prefix is not None:
        first = _accountant_for(accountant, adjacency, prefix)
        first.compose(prefix)
        start = first._rdp.copy() if isinstance(first, dp_accounting.rdp.RdpAccountant) else first._pld  # noqa: SLF001
    out, extra, delta = [], -math.log1p(-spent_delta), delta - spent_delta
    if isinstance(acc, dp_accounting.rdp.RdpAccountant):
        unit_rdp = acc._rdp.copy()  # noqa: SLF001 - the public API has no prefix query
        for k in range(1, count + 1):
            rdp = k * unit_rdp if start is None else start + k * unit_rdp
            eps, _ = dp_accounting.rdp.rdp_privacy_accountant.compute_epsilon(RDP_ORDERS, rdp, delta)
            out.append(float(eps) + extra)
        return out
    unit_pld = acc._pld  # noqa: SLF001
    running = unit_pld if start is None else start.compose(unit_pld)
    for k in range(1, count + 1):
        if k > 1:
            running = running.compose(unit_pld)
        out.append(float(running.get_epsilon_for_delta(delta)) + extra)
    return out


def dp_sgd_epsilon_per_epoch(config: DpSgdConfig) -> list[float]:
    """Epsilon spent after each epoch (the ledger), cumulative."""
    if config.noise_multiplier == 0:
        return [math.inf] * config.epochs
    adjacency = dp_sgd_adjacency(config)
    return _incremental_ledger(
        _dp_sgd_training_event(config, epochs=1),
        config.epochs,
        config.accountant,
        adjacency,
        config.delta,
        preprocessing_event(config.preprocessing_noise_multiplier, adjacency),
        config.preprocessing_delta,
    )


# ---------------------------------------------------------------- federated DP-FedAvg


def fedavg_adjacency(config: DpFedAvgConfig) -> str:
    return aggregation_adjacency(config.aggregator, config.client_sampling)


def aggregation_adjacency(aggregator: str, client_sampling: str) -> str:
    """DP-FedAvg's adjacency: the tree aggregator's is replace-with-special, uniform (fixed-size)
    client sampling's replace-one, Poisson sampling's add/remove one user."""
    if aggregator == "tree":
        return "replace_special"
    if client_sampling == "uniform":
        return "replace_one"
    return "add_or_remove_one"


def fedavg_event(config: DpFedAvgConfig, rounds: int | None = None) -> dp_accounting.DpEvent:
    prefix = preprocessing_event(config.preprocessing_noise_multiplier, fedavg_adjacency(config))
    return _after_preprocessing(prefix, _fedavg_training_event(config, rounds))


def _fedavg_training_event(config: DpFedAvgConfig, rounds: int | None = None) -> dp_accounting.DpEvent:
    rounds = config.rounds if rounds is None else rounds
    z = config.noise_multiplier
    if config.aggregator == "tree":
        return dp_accounting.SingleEpochTreeAggregationDpEvent(z, rounds)
    if config.client_sampling == "uniform":
        step = dp_accounting.SampledWithoutReplacementDpEvent(
            config.num_clients, config.clients_per_round, dp_accounting.GaussianDpEvent(z / 2)
        )
    else:
        step = dp_accounting.PoissonSampledDpEvent(config.sampling_rate, dp_accounting.GaussianDpEvent(z))
    return dp_accounting.SelfComposedDpEvent(step, rounds)


def fedavg_epsilon(config: DpFedAvgConfig, rounds: int | None = None) -> float:
    if not config.is_private or config.noise_multiplier == 0:
        return math.inf
    return epsilon_of(
        fedavg_event(config, rounds), config.accountant, fedavg_adjacency(config), config.delta,
        config.preprocessing_delta,
    )  # fmt: skip


def fedavg_epsilon_per_round(config: DpFedAvgConfig) -> list[float]:
    """Epsilon spent after each round (the ledger), cumulative."""
    if not config.is_private or config.noise_multiplier == 0:
        return [math.inf] * config.rounds
    if config.aggregator == "tree":  # not a self-composition: recompute each prefix
        return [fedavg_epsilon(config, r) for r in range(1, config.rounds + 1)]
    adjacency = fedavg_adjacency(config)
    return _incremental_ledger(
        _fedavg_training_event(config, rounds=1),
        config.rounds,
        config.accountant,
        adjacency,
        config.delta,
        preprocessing_event(config.preprocessing_noise_multiplier, adjacency),
        config.preprocessing_delta,
    )


def fedavg_guarantee(config: DpFedAvgConfig, rounds: int | None = None) -> Guarantee:
    """The user-level guarantee of `rounds` rounds (default: all) of DP-FedAvg under `config`."""
    rounds = config.rounds if rounds is None else rounds
    if not config.is_private:
        return non_private_guarantee("user", config.client_sampling, rounds)
    notes = {
        "poisson": f"Poisson client sampling with q={config.sampling_rate:.4g}.",
        "uniform": f"Uniform sampling of exactly {config.clients_per_round} of "
        f"{config.num_clients} clients per round; replace-one adjacency, so the Gaussian "
        "event uses noise multiplier z/2 (sensitivity 2C).",
    }
    note, sampling = notes[config.client_sampling], config.client_sampling
    if config.aggregator == "tree":
        sampling = "epoch"
        note = (
            "Tree aggregation (DP-FTRL): clients are taken in one seeded random order, exactly "
            f"{config.clients_per_round} per round, each at most once; no amplification by sampling "
            "is claimed."
        )
    return Guarantee(
        event=fedavg_event(config, rounds),
        accountant=config.accountant,
        delta=config.delta,
        unit="user",
        adjacency=fedavg_adjacency(config),
        sampling=sampling,
        noise_multiplier=config.noise_multiplier,
        l2_norm_clip=config.clip_norm,
        steps=rounds,
        notes=(note, *_preprocessing_notes(config)),
        spent_delta=config.preprocessing_delta,
    )


# ---------------------------------------------------------------- calibration


def calibrate_noise(
    epsilon_of_noise: Callable[[float], float], target_epsilon: float, tol: float = 1e-3
) -> float:
    """Smallest noise multiplier (to `tol`) whose epsilon does not exceed the target.

    Bisection on a monotone function; the returned value is always the upper end of the
    final bracket, so epsilon(noise) <= target holds for the value we return.
    """
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be > 0, got {target_epsilon}")
    lo, hi = 0.0, 1.0
    while epsilon_of_noise(hi) > target_epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(
                f"target epsilon {target_epsilon} is unreachable with noise multiplier <= 1e4; "
                "raise the target, or train for fewer steps / with a lower sampling rate"
            )
    while hi - lo > tol * max(1.0, hi):
        mid = (lo + hi) / 2
        if mid > 0 and epsilon_of_noise(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_dp_sgd(config: DpSgdConfig, target_epsilon: float) -> DpSgdConfig:
    """Config with the smallest noise multiplier that meets `target_epsilon` over the run."""
    z = calibrate_noise(lambda z: dp_sgd_epsilon(config.replace(noise_multiplier=z)), target_epsilon)
    return config.replace(noise_multiplier=z)


def calibrate_fedavg(config: DpFedAvgConfig, target_epsilon: float) -> DpFedAvgConfig:
    z = calibrate_noise(lambda z: fedavg_epsilon(config.replace(noise_multiplier=z)), target_epsilon)
    return config.replace(noise_multiplier=z)


def last_affordable(epsilons: list[float], budget: float) -> int:
    """Number of leading ledger entries (epochs or rounds) that stay within `budget`."""
    n = 0
    for eps in epsilons:
        if eps > budget:
            break
        n += 1
    return n


def plan_within_budget(ledger: list[float], budget: float | None, unit: str, how_to_fix: str) -> int:
    """How many epochs/rounds of `ledger` the run may do; ValueError if not even one fits.

    The one budget-stop rule of every pipeline: the run stops *before* the step that would
    exceed the budget, so the reported epsilon never exceeds it.
    """
    if budget is None:
        return len(ledger)
    planned = last_affordable(ledger, budget)
    if planned == 0:
        raise ValueError(f"even one {unit} costs epsilon={ledger[0]:.3g} > target {budget:g}; {how_to_fix}")
    return planned
