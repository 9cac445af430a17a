"""Model performance per window and slice: Spark aggregates in the shared pass, finished on the driver.

Binary: confusion counts, log-loss and Brier sums in the main aggregation; a 1,000-bin score histogram
(labeled positives and negatives, all rows, score sums) in one keyed aggregation gives ROC AUC, average
precision, calibration error and the label-free estimate (CBPE, calibrated on the labeled baseline).
Multiclass: a confusion matrix in one keyed aggregation. Regression: error sums and a KLL sketch of the
residual. Ranking: per-request precision/recall/NDCG/AP/hit/RR computed with array functions, summed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lakemon.context import BIN, LABEL, LABELED, PRED, SCORE, YHAT, CellKey, Results, RunContext, Y, rows_for
from lakemon.performance import math as pm
from lakemon.plan import Agg

if TYPE_CHECKING:
    from pyspark.sql import Column

COUNT_METRICS = {"tp", "fp", "tn", "fn", "labeled_count", "label_coverage", "row_count"}
SELECTION_METRICS = {"statistical_parity_difference", "disparate_impact_ratio"}  # need no labels


@dataclass(frozen=True)
class KeyedAgg:
    """An aggregation with extra keys (score bin, true x predicted class) merged upward like the main one."""

    name: str
    keys: tuple[str, ...]
    aggs: tuple[Agg, ...]
    explode: Column | None = None  # optional generator producing the key column(s) from each row
    cardinality: int = 1  # at most this many key values per window x slice cell (sizes the plan)


def _classes(ctx: RunContext) -> list[str]:
    cfg = ctx.cfg
    if cfg.source.class_scores:
        return list(cfg.source.class_scores)
    return list(cfg.performance.classes)


def projection(ctx: RunContext) -> dict[str, Column]:
    """Derived per-row columns the performance aggregates use (added to the run's projection)."""
    from pyspark.sql import functions as F

    cfg = ctx.cfg
    out: dict[str, Column] = {}
    if cfg.problem_type == "binary":
        bins = cfg.performance.histogram_bins
        p = F.col(SCORE)
        out[Y] = F.when(
            F.col(LABELED), (F.col(LABEL).cast("string") == F.lit(cfg.performance.positive_label)).cast("int")
        )
        out[YHAT] = (p >= F.lit(cfg.performance.threshold)).cast("int")
        clipped = F.least(F.greatest(p, F.lit(0.0)), F.lit(1.0))
        out[BIN] = F.when(~F.isnan(p), F.least(F.floor(clipped * bins), F.lit(bins - 1)).cast("int"))
    return out


def aggs(ctx: RunContext) -> list[Agg]:
    """Main-aggregation aggregates of the performance signal."""
    from pyspark.sql import functions as F

    cfg = ctx.cfg
    if not cfg.performance.enabled:
        return []
    lab = F.col(LABELED)
    out = [Agg("perf_labeled", F.count_if(lab))]
    if not ctx.has_labels and cfg.problem_type not in ("binary", "multiclass"):
        return out
    if cfg.problem_type == "binary":
        y, yhat, p = F.col(Y), F.col(YHAT), F.col(SCORE)
        eps = 1e-15
        pc = F.least(F.greatest(p, F.lit(eps)), F.lit(1 - eps))
        ll = -(y * F.log(pc) + (1 - y) * F.log(1 - pc))
        ok = lab & ~F.isnan(p)
        out += [
            Agg("perf_tp", F.count_if(ok & (y == 1) & (yhat == 1))),
            Agg("perf_fp", F.count_if(ok & (y == 0) & (yhat == 1))),
            Agg("perf_tn", F.count_if(ok & (y == 0) & (yhat == 0))),
            Agg("perf_fn", F.count_if(ok & (y == 1) & (yhat == 0))),
            Agg("perf_sum_ll", F.sum(F.when(ok, ll))),
            Agg("perf_sum_brier", F.sum(F.when(ok, (p - y) * (p - y)))),
            Agg("perf_n_scored", F.count_if(ok)),
            # every scored row, labeled or not: the selection rates of the label-free fairness metrics
            Agg("perf_n_predicted", F.count_if(~F.isnan(p))),
            Agg("perf_predicted_pos", F.count_if(~F.isnan(p) & (yhat == 1))),
        ]
    elif cfg.problem_type == "multiclass":
        classes = _classes(ctx)
        pred = F.col(PRED).cast("string")
        if cfg.source.class_scores:
            probs = {c: F.col(f"`{col}`").cast("double") for c, col in cfg.source.class_scores.items()}
            true_p = F.coalesce(
                *[F.when(F.col(LABEL).cast("string") == F.lit(c), pr) for c, pr in probs.items()]
            )
            ll = -F.log(F.least(F.greatest(true_p, F.lit(1e-15)), F.lit(1 - 1e-15)))
            out.append(Agg("perf_sum_ll", F.sum(F.when(lab, ll))))
            out.append(Agg("perf_n_ll", F.count_if(lab & true_p.isNotNull())))
            out.append(Agg("perf_sum_maxp", F.sum(F.greatest(*probs.values()))))
            out.append(Agg("perf_n_scored", F.count(F.greatest(*probs.values()))))
            for i, c in enumerate(classes):
                pr = probs[c]
                out += [
                    Agg(f"perf_sp_{i}", F.sum(pr)),
                    Agg(f"perf_spp_{i}", F.sum(F.when(pred == F.lit(c), pr))),
                    Agg(f"perf_np_{i}", F.count_if(pred == F.lit(c))),
                ]
    elif cfg.problem_type == "regression":
        yv = F.col(LABEL).cast("double")
        err = F.col(PRED).cast("double") - yv
        ok = lab & err.isNotNull() & ~F.isnan(err)
        e = F.when(ok, err)
        out += [
            Agg("perf_n", F.count(e)),
            Agg("perf_sum_err", F.sum(e)),
            Agg("perf_sum_abs", F.sum(F.abs(e))),
            Agg("perf_sum_sq", F.sum(e * e)),
            Agg("perf_sum_y", F.sum(F.when(ok, yv))),
            Agg("perf_sum_y2", F.sum(F.when(ok, yv * yv))),
            Agg("perf_max_abs", F.max(F.abs(e)), "max"),
            Agg("perf_sum_ape", F.sum(F.when(ok & (yv != 0), F.abs(e) / F.abs(yv)))),
            Agg("perf_n_ape", F.count_if(ok & (yv != 0))),
            Agg("perf_zero_targets", F.count_if(ok & (yv == 0))),
            Agg("perf_resid_kll", F.kll_sketch_agg_double(e, F.lit(200)), "kll"),
        ]
    elif cfg.problem_type == "ranking":
        out += _ranking_aggs(ctx)
    return out


def _ranking_aggs(ctx: RunContext) -> list[Agg]:
    from pyspark.sql import functions as F

    ranked = F.col(PRED)
    rel = F.array_distinct(F.col(LABEL))
    nrel = F.size(rel)
    ok = F.col(LABELED) & ranked.isNotNull()
    out = [Agg("rank_n", F.count_if(ok))]
    # reciprocal rank over the whole list: 1 / (first position whose item is relevant)
    first = F.array_position(F.transform(ranked, lambda x: F.array_contains(rel, x)), F.lit(True))
    out.append(
        Agg("rank_sum_rr", F.sum(F.when(ok & (first > 0), 1.0 / first).otherwise(F.when(ok, F.lit(0.0)))))
    )
    for k in ctx.cfg.performance.ranking.k:
        # positions 1..k of the list as served; a repeated item is a hit at its first position only
        hits = F.transform(
            F.slice(ranked, 1, k),
            lambda x, i: F.coalesce(
                F.array_contains(rel, x) & (F.array_position(ranked, x) == i + 1), F.lit(False)
            ).cast("double"),
        )
        nhit = F.aggregate(hits, F.lit(0.0), lambda a, b: a + b)
        dcg = F.aggregate(F.transform(hits, lambda h, i: h / F.log2(i + 2)), F.lit(0.0), lambda a, b: a + b)
        ideal_n = F.least(nrel, F.lit(k))
        idcg = F.aggregate(
            F.transform(F.sequence(F.lit(1), F.greatest(ideal_n, F.lit(1))), lambda i: 1.0 / F.log2(i + 1)),
            F.lit(0.0),
            lambda a, b: a + b,
        )
        # AP@k: sum over hit positions of precision@i, normalised by min(k, |relevant|)
        cum = _precision_at_hits(hits)
        ap = F.aggregate(cum, F.lit(0.0), lambda a, b: a + b) / F.greatest(ideal_n, F.lit(1))
        has_rel = nrel > 0
        out += [
            Agg(f"rank_p_{k}", F.sum(F.when(ok, nhit / F.lit(float(k))))),
            Agg(f"rank_r_{k}", F.sum(F.when(ok, F.when(has_rel, nhit / nrel).otherwise(F.lit(0.0))))),
            Agg(f"rank_ndcg_{k}", F.sum(F.when(ok, F.when(has_rel, dcg / idcg).otherwise(F.lit(0.0))))),
            Agg(f"rank_ap_{k}", F.sum(F.when(ok, F.when(has_rel, ap).otherwise(F.lit(0.0))))),
            Agg(f"rank_hit_{k}", F.sum(F.when(ok, (nhit > 0).cast("double")))),
        ]
    return out


def _precision_at_hits(hits: Column) -> Column:
    """Per position i (0-based): hit_i * precision@(i+1); their sum / min(k, |relevant|) is AP@k."""
    from pyspark.sql import functions as F

    return F.transform(
        hits, lambda h, i: h * F.aggregate(F.slice(hits, 1, i + 1), F.lit(0.0), lambda a, b: a + b) / (i + 1)
    )


def keyed_aggs(ctx: RunContext) -> list[KeyedAgg]:
    """Keyed aggregations of the performance signal (score histogram, confusion matrix, items)."""
    from pyspark.sql import functions as F

    cfg = ctx.cfg
    if not cfg.performance.enabled:
        return []
    if cfg.problem_type == "binary":
        lab = F.col(LABELED)
        return [
            KeyedAgg(
                "score_hist",
                (BIN,),
                (
                    Agg("h_count", F.count(F.lit(1))),
                    Agg("h_pos", F.count_if(lab & (F.col(Y) == 1))),
                    Agg("h_neg", F.count_if(lab & (F.col(Y) == 0))),
                    Agg("h_sum_score", F.sum(F.when(lab, F.col(SCORE)))),
                ),
                cardinality=cfg.performance.histogram_bins + 1,  # and NULL for a NaN score
            )
        ]
    if cfg.problem_type == "multiclass" and ctx.has_labels:
        return [
            KeyedAgg(
                "confusion",
                ("__true", "__predicted"),
                (Agg("n", F.count(F.lit(1))),),
                explode=F.struct(
                    F.col(LABEL).cast("string").alias("__true"),
                    F.col(PRED).cast("string").alias("__predicted"),
                ),
                cardinality=(len(_classes(ctx)) + 1) ** 2,  # unknown classes: 1, the finest grain
            )
        ]
    if cfg.problem_type == "ranking":
        kmax = max(cfg.performance.ranking.k)
        return [
            KeyedAgg(
                "items",
                (),
                (Agg("items_hll", F.hll_sketch_agg(F.col("__item")), "hll"),),
                explode=F.explode(F.slice(F.col(PRED), 1, kmax)).alias("__item"),
            )
        ]
    return []


# ---------------------------------------------------------------------------------------------------
# Finalize
# ---------------------------------------------------------------------------------------------------


def _hist_arrays(df: Any, bins: int) -> dict[CellKey, dict[str, np.ndarray]]:
    out: dict[CellKey, dict[str, np.ndarray]] = {}
    if df is None or len(df) == 0:
        return out
    for key, g in df.groupby(["window_start", "slice_key", "slice_value"], dropna=False, sort=False):
        ws, sk, sv = key
        sk = None if sk is None or (isinstance(sk, float) and np.isnan(sk)) else sk
        sv = None if sv is None or (isinstance(sv, float) and np.isnan(sv)) else sv
        g = g[g[BIN].notna()]
        idx = g[BIN].astype(int).to_numpy()
        arrays = {}
        for name in ("h_count", "h_pos", "h_neg", "h_sum_score"):
            a = np.zeros(bins)
            np.add.at(a, idx, g[name].fillna(0).to_numpy(dtype=float))
            arrays[name] = a
        out[(ws.to_pydatetime() if hasattr(ws, "to_pydatetime") else ws, sk, sv)] = arrays
    return out


def calibration_from_baseline(ctx: RunContext, results: Results) -> tuple[np.ndarray | None, str | None]:
    """Calibrated probability per score bin, learned on the labeled baseline (CBPE)."""
    if results.baseline_histogram is None:
        return None, "no labeled baseline to calibrate the label-free estimate on"
    pos, neg = results.baseline_histogram
    if pos.sum() < ctx.cfg.performance.min_labeled or neg.sum() == 0:
        return None, "baseline has too few labeled rows to calibrate the label-free estimate"
    return pm.fit_calibration(pos, neg, n_bins=len(pos)), None


def metrics_for_cell(
    ctx: RunContext, m: dict[str, Any], hist: dict[str, np.ndarray] | None
) -> dict[str, float | None]:
    """All label-based metrics of one window and slice (before the minimum-sample rule)."""
    cfg = ctx.cfg
    out: dict[str, float | None] = {}
    if cfg.problem_type == "binary":
        tp, fp, tn, fn = (float(m.get(f"perf_{x}") or 0) for x in ("tp", "fp", "tn", "fn"))
        out.update(pm.binary_metrics(tp, fp, tn, fn))
        n = tp + fp + tn + fn
        out["log_loss"] = pm.log_loss_from_sums(float(m.get("perf_sum_ll") or 0.0), n)
        out["brier_score"] = pm.brier_from_sums(float(m.get("perf_sum_brier") or 0.0), n)
        if hist is not None:
            out["roc_auc"] = pm.roc_auc_from_histogram(hist["h_pos"], hist["h_neg"])
            out["pr_auc"] = pm.average_precision_from_histogram(hist["h_pos"], hist["h_neg"])
            nb = cfg.performance.calibration_bins
            if len(hist["h_pos"]) % nb == 0:
                out["expected_calibration_error"] = pm.ece_from_histogram(
                    hist["h_pos"], hist["h_neg"], hist["h_sum_score"], n_bins=nb
                )
    elif cfg.problem_type == "regression":
        out.update(
            pm.regression_metrics(
                float(m.get("perf_n") or 0),
                float(m.get("perf_sum_err") or 0),
                float(m.get("perf_sum_abs") or 0),
                float(m.get("perf_sum_sq") or 0),
                float(m.get("perf_sum_y") or 0),
                float(m.get("perf_sum_y2") or 0),
                float(m.get("perf_max_abs") or 0),
                float(m.get("perf_sum_ape") or 0),
                float(m.get("perf_n_ape") or 0),
                float(m.get("perf_zero_targets") or 0),
            )
        )
        q = m.get("perf_resid_kll__q")
        if q is not None:
            for prob, v in zip(cfg.performance.residual_quantiles, q, strict=False):
                out[f"residual_p{round(prob * 100):02d}"] = float(v) if v is not None else None
    elif cfg.problem_type == "ranking":
        ks = list(cfg.performance.ranking.k)
        sums: dict[str, float] = {
            "n_requests": float(m.get("rank_n") or 0),
            "sum_rr": float(m.get("rank_sum_rr") or 0),
        }
        for k in ks:
            for short, long in (
                ("p", "precision"),
                ("r", "recall"),
                ("ndcg", "ndcg"),
                ("ap", "ap"),
                ("hit", "hit"),
            ):
                sums[f"sum_{long}_at_{k}"] = float(m.get(f"rank_{short}_{k}") or 0)
        if m.get("items_hll__n") is not None and cfg.performance.ranking.catalog_size:
            sums["distinct_recommended"] = float(m["items_hll__n"])
            sums["catalog_size"] = float(cfg.performance.ranking.catalog_size)
        out.update(pm.ranking_metrics(sums, ks))
    return out


def finalize(ctx: RunContext, results: Results) -> list[dict[str, Any]]:
    """Rows of ``performance_metrics`` for every window and slice of the run."""
    cfg = ctx.cfg
    if not cfg.performance.enabled:
        return []
    rows: list[dict[str, Any]] = []
    bins = cfg.performance.histogram_bins
    hists = _hist_arrays(results.keyed.get("score_hist"), bins) if cfg.problem_type == "binary" else {}
    confusion = _confusion(results.keyed.get("confusion")) if cfg.problem_type == "multiclass" else {}
    calibrated, calib_reason = (None, None)
    if cfg.problem_type == "binary" and cfg.performance.estimate:
        calibrated, calib_reason = calibration_from_baseline(ctx, results)
    classes = _classes(ctx)
    min_n = cfg.performance.min_labeled

    def emit(
        key: CellKey,
        metric: str,
        value: float | None,
        m: dict[str, Any],
        reason: str | None = None,
        cls: str | None = None,
    ) -> None:
        v = None if value is None or not np.isfinite(value) else float(value)
        rows.append(
            {
                **ctx.key_columns(*key),
                "metric": metric,
                "class": cls,
                "value": v,
                "row_count": int(m.get("row_count") or 0),
                "labeled_count": int(m.get("perf_labeled") or 0),
                "reason": reason if v is None else None,
            }
        )

    for key in rows_for(results.merged):
        m = results.merged[key]
        n_rows = int(m.get("row_count") or 0)
        labeled = int(m.get("perf_labeled") or 0)
        emit(key, "labeled_count", float(labeled), m)
        emit(key, "label_coverage", labeled / n_rows if n_rows else None, m, "empty window")
        too_few = labeled < min_n
        reason = f"too few labeled rows ({labeled} < performance.min_labeled={min_n})" if too_few else None
        if ctx.has_labels:
            values = metrics_for_cell(ctx, m, hists.get(key))
            if cfg.problem_type == "multiclass":
                cm = confusion.get(key)
                if cm is not None:
                    # log loss over the labeled rows whose true class has a probability (perf_n_ll)
                    values.update(
                        pm.multiclass_metrics(cm[0], cm[1], m.get("perf_sum_ll"), m.get("perf_n_ll"))
                    )
                    for (t, p), c in cm[2].items():
                        emit(key, "confusion_count", float(c), m, cls=f"{t}|{p}")
            for metric, value in values.items():
                if metric in COUNT_METRICS:
                    emit(key, metric, value, m)
                else:
                    emit(
                        key,
                        metric,
                        None if too_few else value,
                        m,
                        reason or "undefined (no positives or no negatives)",
                    )
        # label-free estimate on every window (so it can be compared where labels exist)
        if cfg.performance.estimate and cfg.problem_type == "binary":
            h = hists.get(key)
            if calibrated is not None and h is not None and h["h_count"].sum() >= min_n:
                est = pm.estimate_binary(h["h_count"], calibrated, cfg.performance.threshold, n_bins=bins)
                for metric, value in est.items():
                    emit(key, metric, value, m, "undefined")
            else:
                why = calib_reason or f"too few rows (< performance.min_labeled={min_n})"
                for metric in (
                    "estimated_accuracy",
                    "estimated_precision",
                    "estimated_recall",
                    "estimated_f1",
                ):
                    emit(key, metric, None, m, why)
        elif cfg.performance.estimate and cfg.problem_type == "multiclass" and cfg.source.class_scores:
            n = float(m.get("perf_n_scored") or 0)
            if n >= min_n:
                est = pm.estimate_multiclass(
                    float(m.get("perf_sum_maxp") or 0),
                    n,
                    [float(m.get(f"perf_sp_{i}") or 0) for i in range(len(classes))],
                    [float(m.get(f"perf_spp_{i}") or 0) for i in range(len(classes))],
                    [float(m.get(f"perf_np_{i}") or 0) for i in range(len(classes))],
                    classes,
                )
                for metric, value in est.items():
                    emit(key, metric, value, m, "undefined")
    rows += _fairness_rows(ctx, results, emit)
    return rows


def _confusion(df: Any) -> dict[CellKey, tuple[np.ndarray, list[str], dict[tuple[str, str], int]]]:
    out: dict[CellKey, tuple[np.ndarray, list[str], dict[tuple[str, str], int]]] = {}
    if df is None or len(df) == 0:
        return out
    cells: dict[CellKey, dict[tuple[str, str], int]] = defaultdict(dict)
    for r in df.to_dict("records"):
        ws = (
            r["window_start"].to_pydatetime()
            if hasattr(r["window_start"], "to_pydatetime")
            else r["window_start"]
        )
        sk = r["slice_key"] if isinstance(r["slice_key"], str) else None
        sv = r["slice_value"] if isinstance(r["slice_value"], str) else None
        t, p = r["__true"], r["__predicted"]
        if t is None or (isinstance(t, float) and np.isnan(t)):
            continue
        cells[(ws, sk, sv)][(str(t), str(p))] = int(r["n"])
    for key, counts in cells.items():
        classes = sorted({t for t, _ in counts} | {p for _, p in counts})
        idx = {c: i for i, c in enumerate(classes)}
        cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
        for (t, p), c in counts.items():
            cm[idx[t], idx[p]] += c
        out[key] = (cm, classes, counts)
    return out


def _fairness_rows(ctx: RunContext, results: Results, emit: Any) -> list[dict[str, Any]]:
    """Fairness gaps of every protected slice value vs the rest of its window's population.

    The rest is the window's population minus the group (the other values of the slice, ``__null__`` and
    ``__other__`` included). Statistical parity and disparate impact compare selection rates over every
    scored row; the other gaps use the labeled rows' confusion counts.
    """
    if ctx.cfg.problem_type != "binary" or not ctx.has_labels:
        return []
    protected = {d.key for d in ctx.grouping.slices if d.protected}
    if not protected:
        return []
    min_n = ctx.cfg.performance.min_labeled
    for key in rows_for(results.merged):
        ws, sk, _sv = key
        if sk not in protected:
            continue
        m = results.merged[key]
        pop = results.merged.get((ws, None, None))
        if pop is None:
            continue
        g = tuple(float(m.get(f"perf_{x}") or 0) for x in ("tp", "fp", "tn", "fn"))
        p = tuple(float(pop.get(f"perf_{x}") or 0) for x in ("tp", "fp", "tn", "fn"))
        rest = tuple(a - b for a, b in zip(p, g, strict=True))
        g_sel = tuple(float(m.get(f"perf_{x}") or 0) for x in ("predicted_pos", "n_predicted"))
        p_sel = tuple(float(pop.get(f"perf_{x}") or 0) for x in ("predicted_pos", "n_predicted"))
        rest_sel = tuple(a - b for a, b in zip(p_sel, g_sel, strict=True))
        few_labeled = sum(g) < min_n or sum(rest) < min_n
        few_scored = g_sel[1] < min_n or rest_sel[1] < min_n
        for metric, value in pm.fairness_metrics(g, rest, g_sel, rest_sel).items():
            few = few_scored if metric in SELECTION_METRICS else few_labeled
            what = "scored" if metric in SELECTION_METRICS else "labeled"
            emit(
                key,
                metric,
                None if few else value,
                m,
                f"too few {what} rows in the group or the rest" if few else "undefined",
            )
    return []


def baseline_metrics(
    ctx: RunContext, results: Results
) -> dict[tuple[str | None, str | None], dict[str, float]]:
    """Performance on the baseline (its pseudo-window), per slice: the reference for relative alert rules."""
    out: dict[tuple[str | None, str | None], dict[str, float]] = {}
    rows = finalize(ctx, results)
    for r in rows:
        if r["value"] is not None and r["class"] is None:
            out.setdefault((r["slice_key"], r["slice_value"]), {})[r["metric"]] = r["value"]
    return out
