"""ppml: differentially private training, centralized and federated, with an honest epsilon.

    import ppml
    result = ppml.train_centralized(my_model, (x, y), ppml.DP(target_epsilon=3))
    result.privacy["statement"], result.test_accuracy, result.model

Functions: train_centralized, train_federated, compare, tune, budget (the binaries' counterparts,
same settings, same results); DP (the privacy settings); ConfigError (bad input, one line).
TensorFlow is imported when a function runs, not on `import ppml`.
"""

from ppml.api import (
    DP,
    Comparison,
    ConfigError,
    Result,
    budget,
    compare,
    train_centralized,
    train_federated,
    tune,
)

__all__ = ["DP", "Comparison", "ConfigError", "Result", "budget", "compare", "train_centralized",
           "train_federated", "tune"]  # fmt: skip
