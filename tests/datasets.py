"""The shared data sets (real follow graph, real tweet texts), with generated
stand-ins when ../shared/data is absent, so tests run anywhere."""

from __future__ import annotations

import random
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
EDGES_FILE = DATA_DIR / "twitter-verizon.edges"
TWEETS_FILE = DATA_DIR / "tweets-sample.txt"


def load_edges(max_edges: int | None = None, seed: int = 7) -> list[tuple[int, int]]:
    """(follower, followee) pairs: the real graph's first edges, or a
    generated heavy-tailed graph when the file is absent."""
    if EDGES_FILE.exists():
        edges = []
        with EDGES_FILE.open() as handle:
            for line in handle:
                if not line.strip() or line.startswith("#"):
                    continue
                follower, followee = line.split()[:2]
                if follower != followee:
                    edges.append((int(follower), int(followee)))
                if max_edges is not None and len(edges) >= max_edges:
                    break
        return edges
    return generated_edges(users=400, edges=max_edges or 3000, seed=seed)


def generated_edges(
    users: int, edges: int, seed: int = 7, zipf: float = 1.2
) -> list[tuple[int, int]]:
    """A power-law graph: followees drawn with Zipf-like popularity."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** zipf for rank in range(users)]
    result: set[tuple[int, int]] = set()
    while len(result) < edges:
        follower = rng.randrange(users)
        followee = rng.choices(range(users), weights=weights)[0]
        if follower != followee:
            result.add((follower, followee))
    return sorted(result)


def load_texts(limit: int = 5000, seed: int = 11) -> list[str]:
    """Real tweet texts (some over 280 characters), or generated ones."""
    if TWEETS_FILE.exists():
        with TWEETS_FILE.open(encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
        return texts[:limit]
    rng = random.Random(seed)
    words = "lorem ipsum dolor sit amet murmur timeline fan out celebrity inbox shard".split()
    return [" ".join(rng.choices(words, k=rng.randint(1, 60))) for _ in range(limit)]
