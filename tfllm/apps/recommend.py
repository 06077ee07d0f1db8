"""`tfllm recommend`: top-N items for a user from what they rated, measured offline on
MovieLens, and a `POST /recommend` server.

Read top to bottom: ratings, items and tags (strictly; a bad row names its file and line)
-> leave-last-out per user by (timestamp, item id): the last rating is the test item, the
one before the validation item -> item text "title | genres | tags", tags only from before
the earliest held-out timestamp (no leakage), embedded once by the sentence embedder ->
four scorers over every item: popularity, item-kNN (cosine on binary co-ratings), content
(a user's profile is the mean embedding of the items they rated well) and the hybrid ->
the hybrid's settings chosen on the validation items (best NDCG@10 among the settings that
keep cold items findable), one setting for every user -> each
method scored on the test items: HR@10 and NDCG@10 ranking every item the user has not
rated, and for users whose test item is cold (< 5 training ratings) also among 100 unseen
items sampled with a fixed seed -> `recommend_report.json` and a bar chart.

The hybrid: item-kNN with the user's recent items weighted up (half-life in items), plus
the content score weighted by how little co-rating evidence an item has; both scores
z-scored per user so one weight means the same for every user.

Example:

    tfllm recommend --ratings $D/movielens_small/ratings.csv --items $D/movielens_small/movies.csv \\
        --tags $D/movielens_small/tags.csv --model "$MINILM" --report out/recommend
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

from tfllm.errors import InputError

COLD_RATINGS = 5  # a test item with fewer training ratings is cold
SAMPLED_NEGATIVES = 100
EMBEDDINGS_FILE = "item_embeddings.npy"


# --- data --------------------------------------------------------------------------------

def read_csv(path: str | Path, columns: dict[str, type]) -> list[tuple[int, dict]]:
    """(line, row) per CSV row with `columns` converted by their types; a missing column,
    an empty or unparsable value, or bad UTF-8 is an InputError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        try:
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}:1: no column {missing[0]!r} (header: "
                                 f"{reader.fieldnames})")
            for row in reader:
                try:
                    rows.append((reader.line_num, {c: kind(row[c]) for c, kind in columns.items()
                                                   if row[c] not in (None, "")}))
                except (TypeError, ValueError) as err:
                    raise InputError(f"{path}:{reader.line_num}: {err}") from None
                if len(rows[-1][1]) < len(columns):
                    empty = next(c for c in columns if c not in rows[-1][1])
                    raise InputError(f"{path}:{reader.line_num}: empty {empty!r}")
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 after line {reader.line_num} ({err})") from None
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


@dataclass
class Catalog:
    """Items (ids and titles/genres) and every user's ratings in time order."""

    item_ids: list[int]
    titles: list[str]
    genres: list[str]
    histories: list[np.ndarray]  # per user: item indices by (timestamp, item id)
    ratings: list[np.ndarray]    # per user: the ratings in the same order
    times: list[np.ndarray]
    user_ids: list[int] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def read_catalog(ratings_path: str | Path, items_path: str | Path) -> Catalog:
    items = read_csv(items_path, {"movieId": int, "title": str, "genres": str})
    index: dict[int, int] = {}
    for line, row in items:
        if row["movieId"] in index:
            raise InputError(f"{items_path}:{line}: duplicate movieId {row['movieId']}")
        index[row["movieId"]] = len(index)
    by_user: dict[int, list[tuple[int, int, float]]] = {}
    for line, row in read_csv(ratings_path, {"userId": int, "movieId": int, "rating": float,
                                             "timestamp": int}):
        if row["movieId"] not in index:
            raise InputError(f"{ratings_path}:{line}: movieId {row['movieId']} is not in "
                             f"{items_path}")
        by_user.setdefault(row["userId"], []).append(
            (row["timestamp"], row["movieId"], row["rating"]))
    users = sorted(by_user)
    rows = [sorted(by_user[u]) for u in users]  # (timestamp, movieId): the tie-break
    return Catalog([r["movieId"] for _, r in items], [r["title"] for _, r in items],
                   [r["genres"] for _, r in items],
                   [np.array([index[m] for _, m, _ in r]) for r in rows],
                   [np.array([x for _, _, x in r]) for r in rows],
                   [np.array([t for t, _, _ in r]) for r in rows], users)


def item_texts(catalog: Catalog, tags_path: str | Path | None, before: int) -> list[str]:
    """"title | genres | tags" per item, tags written before `before` only."""
    tags: dict[int, list[str]] = {}
    if tags_path:
        index = {m: i for i, m in enumerate(catalog.item_ids)}
        for _, row in read_csv(tags_path, {"movieId": int, "tag": str, "timestamp": int}):
            if row["timestamp"] < before and row["movieId"] in index:
                found = tags.setdefault(index[row["movieId"]], [])
                if row["tag"].lower() not in (t.lower() for t in found):
                    found.append(row["tag"])
    return [" | ".join([title, genre.replace("|", ", ")] + ([", ".join(tags[i])] if i in tags
                                                           else []))
            for i, (title, genre) in enumerate(zip(catalog.titles, catalog.genres, strict=True))]


@dataclass
class Split:
    """Each user's history before a held-out item (`offset` 1: the last rating, the test
    item; 2: the one before, the validation item)."""

    history: list[np.ndarray]
    ratings: list[np.ndarray]
    held_out: np.ndarray
    seen: list[np.ndarray]  # every item the user rated at all (never a sampled negative)


def leave_last_out(catalog: Catalog, offset: int) -> Split:
    keep = [i for i, h in enumerate(catalog.histories) if len(h) > offset]
    return Split([catalog.histories[i][:-offset] for i in keep],
                 [catalog.ratings[i][:-offset] for i in keep],
                 np.array([catalog.histories[i][-offset] for i in keep]),
                 [catalog.histories[i] for i in keep])


# --- scorers: [users, items] scores, higher is better -----------------------------------

def interaction_matrix(split: Split, n_items: int, half_life: float = 0.0) -> sparse.csr_matrix:
    """Users x items; 1 per rated item, or with `half_life` > 0 a weight halving every
    `half_life` items back from the user's latest."""
    rows, cols, vals = [], [], []
    for u, items in enumerate(split.history):
        age = np.arange(len(items))[::-1]
        rows += [u] * len(items)
        cols += items.tolist()
        vals += (0.5 ** (age / half_life) if half_life > 0 else np.ones(len(items))).tolist()
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(split.history), n_items))


def popularity(split: Split, n_items: int) -> np.ndarray:
    counts = np.bincount(np.concatenate(split.history), minlength=n_items).astype(np.float32)
    return np.broadcast_to(counts, (len(split.history), n_items))


def unit_columns(binary: sparse.csr_matrix) -> sparse.csr_matrix:
    """The binary users x items matrix with each item column scaled to unit length."""
    norms = np.sqrt(np.asarray(binary.sum(0)).ravel())
    return binary @ sparse.diags(1.0 / np.maximum(norms, 1.0))


def knn_scores(weights: sparse.csr_matrix, unit: sparse.csr_matrix) -> np.ndarray:
    """Per row of `weights`, the weighted sum over its items of their cosine to every item;
    as (W Xn^T) Xn, so the items x items similarity is never formed."""
    return np.asarray(((weights @ unit.T) @ unit).todense(), dtype=np.float32)


def item_knn(split: Split, n_items: int, half_life: float = 0.0) -> np.ndarray:
    """Sum over the user's items of the cosine between item columns of the binary matrix."""
    return knn_scores(interaction_matrix(split, n_items, half_life),
                      unit_columns(interaction_matrix(split, n_items)))


def content(split: Split, embeddings: np.ndarray, liked: float = 4.0) -> np.ndarray:
    """Cosine to the mean embedding of the items the user rated >= `liked` (all their items
    when none)."""
    profiles = np.stack([embeddings[h[r >= liked] if (r >= liked).any() else h].mean(0)
                         for h, r in zip(split.history, split.ratings, strict=True)])
    profiles /= np.linalg.norm(profiles, axis=1, keepdims=True)
    return profiles @ embeddings.T


def zscore(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean(1, keepdims=True)) / (scores.std(1, keepdims=True) + 1e-9)


@dataclass
class HybridConfig:
    """hybrid = z(item-kNN, recent items weighted by `half_life`) + `content_weight` *
    z(content) * (1 + `cold_boost` * exp(-count / `cold_scale`)): content counts most where
    an item has little co-rating evidence."""

    half_life: float = 0.0
    content_weight: float = 0.0
    cold_boost: float = 0.0
    cold_scale: float = 5.0


def hybrid(knn_z: np.ndarray, content_z: np.ndarray, counts: np.ndarray,
           cfg: HybridConfig) -> np.ndarray:
    confidence = 1.0 + cfg.cold_boost * np.exp(-counts / cfg.cold_scale)
    return knn_z + cfg.content_weight * content_z * confidence[None, :]


# --- metrics -----------------------------------------------------------------------------

def ranks(scores: np.ndarray, split: Split, candidates: list[np.ndarray] | None = None
          ) -> np.ndarray:
    """1-based rank of each user's held-out item among every item not in their history
    (or among `candidates[u]` + the held-out item); ties go to the lower item index."""
    out = np.zeros(len(split.held_out), dtype=np.int64)
    for u, target in enumerate(split.held_out):
        row = scores[u]
        if candidates is None:
            pool = np.ones(row.shape[0], dtype=bool)
            pool[split.history[u]] = False
        else:
            pool = np.zeros(row.shape[0], dtype=bool)
            pool[candidates[u]] = True
        pool[target] = False
        s = row[target]
        higher = (row[pool] > s).sum() + (row[pool][np.flatnonzero(pool) < target] == s).sum()
        out[u] = 1 + higher
    return out


def hit_and_ndcg(rank: np.ndarray, k: int = 10) -> dict[str, float]:
    top = rank <= k
    return {f"hr@{k}": float(top.mean()) if len(rank) else 0.0,
            f"ndcg@{k}": float(np.where(top, 1.0 / np.log2(rank + 1), 0.0).mean())
            if len(rank) else 0.0}


def sampled_candidates(split: Split, n_items: int, users: np.ndarray, seed: int = 0
                       ) -> list[np.ndarray]:
    """Per user, 100 items they never rated, uniform with a fixed seed (the NCF protocol)."""
    rng = np.random.default_rng(seed)
    chosen = set(users.tolist())
    out = []
    for u in range(len(split.held_out)):
        if u not in chosen:
            out.append(np.array([], dtype=np.int64))
            continue
        unseen = np.setdiff1d(np.arange(n_items), split.seen[u])
        out.append(rng.choice(unseen, SAMPLED_NEGATIVES, replace=False))
    return out


def evaluate(scores: np.ndarray, split: Split, cold: np.ndarray,
             sampled: list[np.ndarray]) -> dict:
    """HR@10/NDCG@10 over all users (full ranking), and over cold users full and sampled."""
    full = ranks(scores, split)
    cold_sampled = ranks(scores, split, sampled)[cold]
    return {**hit_and_ndcg(full),
            "cold": {"users": int(cold.sum()), **hit_and_ndcg(full[cold])},
            "cold_sampled": {"users": int(cold.sum()), **hit_and_ndcg(cold_sampled)}}


# --- the whole evaluation ----------------------------------------------------------------

GRID = {"half_life": [0.0, 3.0, 10.0, 30.0], "content_weight": [0.0, 0.1, 0.2, 0.4],
        "cold_boost": [0.0, 2.0, 5.0, 10.0]}


@dataclass
class Phase:
    """Everything scored for one held-out item per user (validation or test)."""

    split: Split
    counts: np.ndarray
    cold: np.ndarray
    sampled: list[np.ndarray]
    content_z: np.ndarray


def make_phase(catalog: Catalog, offset: int, embeddings: np.ndarray, seed: int) -> Phase:
    split = leave_last_out(catalog, offset)
    counts = np.bincount(np.concatenate(split.history), minlength=catalog.n_items)
    cold = counts[split.held_out] < COLD_RATINGS
    return Phase(split, counts, cold,
                 sampled_candidates(split, catalog.n_items, np.flatnonzero(cold), seed),
                 zscore(content(split, embeddings)))


def choose_hybrid(catalog: Catalog, valid: Phase, min_cold_hr: float = 0.25,
                  progress: bool = True) -> tuple[HybridConfig, list[dict]]:
    """The grid point with the best validation NDCG@10 over all users (full ranking) among
    those whose cold validation users reach HR@10 >= `min_cold_hr` among sampled items (the
    best NDCG@10 overall when none does)."""
    from tqdm import tqdm

    tried = []
    for half_life in tqdm(GRID["half_life"], desc="hybrid grid", disable=not progress):
        knn_z = zscore(item_knn(valid.split, catalog.n_items, half_life))
        for weight, boost in itertools.product(GRID["content_weight"], GRID["cold_boost"]):
            if weight == 0 and boost > 0:
                continue
            cfg = HybridConfig(half_life, weight, boost)
            scores = hybrid(knn_z, valid.content_z, valid.counts, cfg)
            tried.append({"config": asdict(cfg),
                          **evaluate(scores, valid.split, valid.cold, valid.sampled)})
    qualified = [row for row in tried if row["cold_sampled"]["hr@10"] >= min_cold_hr] or tried
    best = max(qualified, key=lambda row: (row["ndcg@10"], row["cold_sampled"]["hr@10"]))
    return HybridConfig(**best["config"]), tried


def recommend_report(ratings: str | Path, items: str | Path, tags: str | Path | None,
                     model: str, report_dir: str | Path, seed: int = 0,
                     min_cold_hr: float = 0.25, quiet: bool = False) -> dict:
    """Every method on the test items, the hybrid chosen on validation; writes the report."""
    from tfllm.atomic import atomic_write_text
    from tfllm.embeddings.embed import TextEmbedder

    catalog = read_catalog(ratings, items)
    # tags written before any held-out (validation or test) rating: no leakage in either
    first_held = min(int(t[-2]) for t in catalog.times if len(t) > 2)
    texts = item_texts(catalog, tags, before=first_held)
    embeddings = TextEmbedder(model)(texts, batch_size=128, progress=not quiet)
    valid, test = make_phase(catalog, 2, embeddings, seed), make_phase(catalog, 1, embeddings, seed)
    chosen, tried = choose_hybrid(catalog, valid, min_cold_hr, progress=not quiet)
    methods = {
        "popularity": popularity(test.split, catalog.n_items),
        "item-knn": item_knn(test.split, catalog.n_items),
        "content": test.content_z,
        "hybrid": hybrid(zscore(item_knn(test.split, catalog.n_items, chosen.half_life)),
                         test.content_z, test.counts, chosen),
    }
    results = {name: evaluate(scores, test.split, test.cold, test.sampled)
               for name, scores in methods.items()}
    report = {"methods": results, "hybrid": asdict(chosen),
              "chosen_on": "validation items (second-to-last rating): best NDCG@10 (full "
                           "ranking, all users) among the settings whose cold validation users "
                           f"reach HR@10 >= {min_cold_hr} among sampled items",
              "validation_grid": tried, "users": len(test.split.held_out),
              "items": catalog.n_items, "cold_users": int(test.cold.sum()), "seed": seed,
              "tags_before": first_held, "model": model,
              "protocol": "leave-last-out by (timestamp, movieId); every rating is an "
                          "interaction; full ranking over items the user has not rated; cold "
                          f"test items (< {COLD_RATINGS} training ratings) also ranked among "
                          f"{SAMPLED_NEGATIVES} never-rated items sampled with seed {seed}"}
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    plot_report(folder / "recommend_report.png", results)
    np.save(folder / EMBEDDINGS_FILE, embeddings)  # the server reuses them
    atomic_write_text(folder / "recommend_report.json", json.dumps(report, indent=2) + "\n")
    return report


def load_recommender(ratings: str | Path, items: str | Path, report_dir: str | Path
                     ) -> Recommender:
    """The hybrid a report chose, on every rating, with the report's item embeddings."""
    folder = Path(report_dir)
    report = json.loads((folder / "recommend_report.json").read_text())
    catalog = read_catalog(ratings, items)
    embeddings = np.load(folder / EMBEDDINGS_FILE)
    if embeddings.shape[0] != catalog.n_items:
        raise InputError(f"{folder / EMBEDDINGS_FILE}: {embeddings.shape[0]} rows for "
                         f"{catalog.n_items} items in {items}; run the report again")
    return Recommender(catalog, embeddings, HybridConfig(**report["hybrid"]))


def plot_report(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    panels = [("NDCG@10, all users", [results[n]["ndcg@10"] for n in names]),
              ("HR@10, all users", [results[n]["hr@10"] for n in names]),
              ("HR@10, cold test items, 100 sampled", [results[n]["cold_sampled"]["hr@10"]
                                                       for n in names])]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.bar(names, values, color=["#999", "#4a7", "#47a", "#a47"][:len(names)])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- serving -----------------------------------------------------------------------------

class Recommender:
    """The chosen hybrid fitted on every rating, for users given as a list of item ids.

    Example:

    >>> import numpy as np
    >>> catalog = Catalog([10, 20, 30], ["A (1990)", "B (1991)", "C (1992)"], ["Drama"] * 3,
    ...                   [np.array([0, 1]), np.array([0, 1, 2])], [np.array([5.0, 4.0])] * 2,
    ...                   [np.array([1, 2]), np.array([1, 2, 3])], [1, 2])
    >>> rec = Recommender(catalog, np.eye(3, dtype=np.float32), HybridConfig())
    >>> [row["id"] for row in rec.recommend([10], k=2)]
    [20, 30]
    """

    def __init__(self, catalog: Catalog, embeddings: np.ndarray, cfg: HybridConfig) -> None:
        self.catalog, self.embeddings, self.cfg = catalog, embeddings, cfg
        everything = Split(catalog.histories, catalog.ratings, np.zeros(0), catalog.histories)
        binary = interaction_matrix(everything, catalog.n_items)
        self.counts = np.asarray(binary.sum(0)).ravel()
        self.unit = unit_columns(binary)
        self.index = {m: i for i, m in enumerate(catalog.item_ids)}

    def recommend(self, history: list[int], ratings: list[float] | None = None,
                  k: int = 10) -> list[dict]:
        """Top `k` items (id, title, score) for a user who rated `history` (oldest first)."""
        unknown = [m for m in history if m not in self.index]
        if unknown:
            raise InputError(f"history: unknown item id {unknown[0]}")
        items = np.array([self.index[m] for m in history])
        split = Split([items], [np.array(ratings if ratings is not None
                                         else [5.0] * len(items), dtype=float)],
                      np.zeros(1, dtype=np.int64), [items])
        weights = interaction_matrix(split, self.catalog.n_items, self.cfg.half_life)
        knn = knn_scores(weights, self.unit)
        scores = hybrid(zscore(knn), zscore(content(split, self.embeddings)), self.counts,
                        self.cfg)[0]
        scores[items] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return [{"id": self.catalog.item_ids[i], "title": self.catalog.titles[i],
                 "score": round(float(scores[i]), 4)} for i in top]


def build_app(recommender: Recommender, max_history: int = 1000, max_k: int = 100,
              max_body: int = 1 << 20):
    """Starlette app: POST /recommend {"history": [item ids, oldest first], "ratings"?: [...],
    "k"?: 10} -> {"items": [{"id", "title", "score"}, ...]}; GET /healthz."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tfllm.apps.json_api import RequestError, int_field, parse_body

    def read(data: dict) -> tuple[list[int], list[float] | None, int]:
        history = data.get("history")
        if (not isinstance(history, list) or not history or len(history) > max_history
                or not all(isinstance(m, int) and not isinstance(m, bool) for m in history)):
            raise RequestError(400, f'"history": 1 to {max_history} item ids (integers)')
        ratings = data.get("ratings")
        if ratings is not None and (
                not isinstance(ratings, list) or len(ratings) != len(history)
                or not all(isinstance(r, int | float) and not isinstance(r, bool)
                           for r in ratings)):
            raise RequestError(400, '"ratings": one number per "history" item')
        return history, ratings, int_field(data, "k", 10, 1, max_k)

    async def recommend(request: Request) -> JSONResponse:
        try:
            history, ratings, k = read(parse_body(await request.body(), max_body))
            items = recommender.recommend(history, ratings, k)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        except InputError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        return JSONResponse({"items": items})

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "items": recommender.catalog.n_items})

    return Starlette(routes=[Route("/recommend", recommend, methods=["POST"]),
                             Route("/healthz", healthz)])
