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
