"""Per-example gradient clipping for DP-SGD: engines (engines.py) over per-layer rules (registry.py)."""

from privacy.clipping.engines import ENGINES, explain_engine, make_clipped_sum_fn, resolve_engine
from privacy.clipping.losses import per_example_loss

__all__ = ["ENGINES", "explain_engine", "make_clipped_sum_fn", "per_example_loss", "resolve_engine"]
