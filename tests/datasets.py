"""The shared data sets for tests: the real follow graph and tweet texts from
``../shared/data``, with generated stand-ins when they are absent.

The graph comes from the benchmark's loader (one parser for both); texts are
read here unfiltered, because some tests need the real ones over 280 code
points that the benchmark leaves out.
"""

from __future__ import annotations

import random

from bench.datasets import EDGES_FILE, TWEETS_FILE, generated_edges, load_edges

__all__ = ["EDGES_FILE", "TWEETS_FILE", "generated_edges", "load_edges", "load_texts"]


def load_texts(limit: int = 5000, seed: int = 11) -> list[str]:
    """Real tweet texts (some over 280 characters), or generated ones."""
    if TWEETS_FILE.exists():
        with TWEETS_FILE.open(encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
        return texts[:limit]
    rng = random.Random(seed)
    words = "lorem ipsum dolor sit amet murmur timeline fan out celebrity inbox shard".split()
    return [" ".join(rng.choices(words, k=rng.randint(1, 60))) for _ in range(limit)]
