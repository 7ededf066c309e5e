"""Process-wide tuning shared by the API and the workers."""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_objects"]


def freeze_startup_objects() -> None:
    """Keep the objects made at start-up out of the garbage collector's full passes.

    The frameworks, the OpenAPI schema and the connection pools are hundreds of thousands of
    objects that live as long as the process. Every full collection walked all of them for nothing
    (collected 0): under a burst, the API stopped for 20-85 ms about twice a second, which was the
    whole of the POST's p99. Frozen, a full pass walks only what was made since.
    """
    gc.collect()
    gc.freeze()
