"""Online champion/challenger: the two variants and which one serves a user.

A variant is named after the registry alias that serves it (`champion`, `challenger`). A user's variant
depends only on the user id and the share (CHALLENGER_TRAFFIC): the user id is hashed with BLAKE2b (not
Python's `hash()`, which is salted per process, so two consumers or two restarts would disagree) to a
point in [0, 1), and the users whose point is below the share see the challenger. Sticky by
construction: every consumer process, every restart and every micro-batch sends a user to the same
variant, and raising the share only adds users to the challenger (none switches back).
"""

from __future__ import annotations

import hashlib

CHAMPION = "champion"
CHALLENGER = "challenger"
VARIANTS = (CHAMPION, CHALLENGER)

_SALT = b"mlops-challenger-v1"
"""Keeps this split independent of any other hash of user ids (a future second experiment gets its own)."""
_SCALE = float(2**64)


def bucket(user_id: int) -> float:
    """The user's fixed point in [0, 1): the first 8 bytes of BLAKE2b(salt, user id), as a fraction."""
    digest = hashlib.blake2b(str(user_id).encode(), digest_size=8, key=_SALT).digest()
    return int.from_bytes(digest, "big") / _SCALE


def variant_of(user_id: int, share: float) -> str:
    """`challenger` for the users whose bucket is below `share`, else `champion`."""
    return CHALLENGER if share > 0.0 and bucket(user_id) < share else CHAMPION
