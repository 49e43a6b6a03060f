"""Seeds of the randomness a guarantee relies on (DP noise, sampling, local-DP noise), one per run.

Runs released together (the comparison's arms, the private search's trials) must not share a noise
stream: two DP arms whose noise is the same standard-normal draw at two scales give the noise away
by subtraction. Every such seed is therefore derived from (the user's seed, the run's identity) by
a hash, so that no two runs of one experiment, and no run and the user's plain seed, share one.
"""

from __future__ import annotations

import hashlib

_DOMAIN = b"ppml/dp-randomness/v1"


def derive_seed(seed: int, *identity: object) -> int:
    """A 62-bit seed that is a function of (seed, identity) and differs between identities.

    62 bits leave room for the small offsets TF's and numpy's seeding add without overflowing int64.
    """
    text = "\x1f".join([str(int(seed)), *(repr(part) for part in identity)]).encode()
    digest = hashlib.sha256(_DOMAIN + b"\x00" + text).digest()
    return int.from_bytes(digest[:8], "little") >> 2


# The user's seed reaches Keras (`tf.keras.utils.set_random_seed`, which seeds numpy's legacy global
# generator: 0 <= seed < 2**32), numpy's default_rng (any seed >= 0), TF's random ops (int64), TFF's
# model function (the same Keras seeding, in its graphs) and `derive_seed` (any integer): the range all
# of them accept is Keras'.
SEED_MAX = 2**32 - 1


def check_seed(seed: object, name: str = "--seed") -> None:
    """ValueError unless `seed` is an integer every consumer accepts (checked before any write)."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise ValueError(f"{name} must be an integer in [0, {SEED_MAX}], got {seed!r}")
    if not 0 <= int(seed) <= SEED_MAX:
        raise ValueError(
            f"{name} must be in [0, {SEED_MAX}] (2**32 - 1: Keras seeds no more), got {int(seed)}"
        )
