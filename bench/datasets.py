"""The benchmark's data: the real follow graph and tweet texts from
``../shared/data`` when present, generated stand-ins otherwise.

Also the tests' graph loader (``tests/datasets.py`` imports it): a fast
power-law generator sized by ``--users``/``--avg-follows``/``--zipf``, texts
cut to the 280-code-point limit, and graph statistics.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from murmur.validation import InvalidInput, check_tweet_text

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
EDGES_FILE = DATA_DIR / "twitter-verizon.edges"
TWEETS_FILE = DATA_DIR / "tweets-sample.txt"


@dataclass
class Graph:
    """A directed follow graph over node ids 0..n-1 (follower, followee)."""

    source: str
    nodes: list[int]
    edges: list[tuple[int, int]]
    in_degree: Counter = field(default_factory=Counter)
    out_degree: Counter = field(default_factory=Counter)

    followers: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.in_degree = Counter(followee for _, followee in self.edges)
        self.out_degree = Counter(follower for follower, _ in self.edges)
        self.followers = {}
        for follower, followee in self.edges:
            self.followers.setdefault(followee, []).append(follower)

    def followers_of(self, node: int) -> list[int]:
        return self.followers.get(node, [])

    def top_followed(self, count: int) -> list[int]:
        return [node for node, _ in self.in_degree.most_common(count)]

    def stats(self) -> dict:
        degrees = sorted(self.in_degree.get(n, 0) for n in self.nodes)
        count = len(degrees)
        return {
            "source": self.source,
            "users": count,
            "edges": len(self.edges),
            "avg_follows": round(len(self.edges) / max(1, count), 2),
            "max_followers": degrees[-1] if degrees else 0,
            "median_followers": degrees[count // 2] if degrees else 0,
            "p99_followers": degrees[min(count - 1, int(0.99 * count))] if degrees else 0,
            "accounts_with_500_plus_followers": sum(1 for d in degrees if d >= 500),
        }


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
    """A power-law graph: followers uniform, followees drawn with Zipf-like
    popularity over a random ranking of the users. O(edges * log users)."""
    rng = random.Random(seed)
    ranking = list(range(users))
    rng.shuffle(ranking)
    cumulative = zipf_cumulative(users, zipf)
    edges = min(edges, users * (users - 1))
    result: set[tuple[int, int]] = set()
    attempts = 0
    while len(result) < edges and attempts < edges * 20:
        attempts += 1
        follower = rng.randrange(users)
        followee = ranking[zipf_pick(cumulative, rng)]
        if follower != followee:
            result.add((follower, followee))
    return sorted(result)


def zipf_cumulative(count: int, exponent: float) -> list[float]:
    """Cumulative weights of ranks 0..count-1 with weight 1/(rank+1)^exponent."""
    total = 0.0
    cumulative = []
    for rank in range(count):
        total += 1.0 / (rank + 1) ** exponent
        cumulative.append(total)
    return cumulative


def zipf_pick(cumulative: list[float], rng: random.Random) -> int:
    return min(len(cumulative) - 1, bisect.bisect(cumulative, rng.random() * cumulative[-1]))


def load_graph(
    prefer_real: bool = True,
    users: int = 9000,
    avg_follows: float = 6.5,
    zipf: float = 1.2,
    seed: int = 7,
) -> Graph:
    """The real graph when present and preferred, else a generated one."""
    if prefer_real and EDGES_FILE.exists():
        edges = load_edges()
        nodes = sorted({n for edge in edges for n in edge})
        # renumber densely so node ids index lists
        index = {node: i for i, node in enumerate(nodes)}
        dense = sorted({(index[a], index[b]) for a, b in edges})
        return Graph(f"real: {EDGES_FILE.name}", list(range(len(nodes))), dense)
    edges = generated_edges(users, int(users * avg_follows), seed=seed, zipf=zipf)
    return Graph(
        f"generated power-law (users={users}, avg_follows={avg_follows}, zipf={zipf})",
        list(range(users)),
        edges,
    )


def tweet_ok(text: str) -> bool:
    """Whether Murmur takes ``text`` as a tweet (by its own rule, so a sample
    line the router would refuse never counts as an error of the run)."""
    try:
        check_tweet_text(text)
    except InvalidInput:
        return False
    return True


def load_texts(limit: int = 5000, seed: int = 11) -> tuple[str, list[str]]:
    """(source, texts): real tweet texts that fit in 280 code points, or generated ones."""
    if TWEETS_FILE.exists():
        with TWEETS_FILE.open(encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
        texts = [t for t in texts if tweet_ok(t)]
        if texts:
            return f"real: {TWEETS_FILE.name}", texts[:limit]
    rng = random.Random(seed)
    words = "lorem ipsum dolor sit amet murmur timeline fan out celebrity inbox shard".split()
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 40))) for _ in range(limit)]
    return "generated", [t for t in texts if tweet_ok(t)]
