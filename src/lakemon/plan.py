"""The shared computation: every metric of a run comes out of a handful of aggregations.

Each signal (profile, quality, performance, drift) contributes :class:`Agg` specs: a Spark aggregate at the
finest grain (window x combination of slice values) and the way it merges upward (sum, min, max, KLL
merge, HLL union). One ``groupBy`` computes them all over the run's projected rows; merging the small
result up to each slice (and the whole population) costs nothing next to the scan. Keyed aggregations
(category frequencies, score histograms, confusion matrices) follow the same pattern with one extra key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

Merge = Literal["sum", "min", "max", "kll", "hll"]
SKETCH_MERGES = ("kll", "hll")

WINDOW = "__window_start"
OTHER = "__other__"
NULL_VALUE = "__null__"

# A keyed aggregation fans rows out to their groups when its finest groups (cell x key value) would hold
# fewer rows than this. Measured at 10M rows, 30 days x 80 slice combinations, score histogram: 1000 bins
# (~6 rows a finest group) fan-out 5.6 s vs finest and merge 10 s; 100 bins (~44 rows) 2.7 s vs 3.6 s.
KEYED_ROWS_PER_GROUP = 100


@dataclass(frozen=True)
class Agg:
    """One aggregate at the finest grain and how it merges into coarser groups.

    ``inputs`` are per-row columns the aggregate reads by name, added once before the grouping: sketch
    aggregates run without code generation, so an argument such as "finite values only" or a hash would
    otherwise be interpreted once per aggregate, per row and (fanned out) per group.
    """

    name: str
    expr: Column
    merge: Merge = "sum"
    inputs: tuple[tuple[str, Column], ...] = ()


def with_inputs(df: DataFrame, aggs: Sequence[Agg]) -> DataFrame:
    """``df`` plus the per-row input columns of ``aggs`` (each computed once, in generated code)."""
    extra: dict[str, Column] = {}
    for a in aggs:
        for name, col in a.inputs:
            extra.setdefault(name, col)
    if not extra:
        return df
    return df.select("*", *[c.alias(n) for n, c in extra.items()])


@dataclass(frozen=True)
class SliceDim:
    """A slice dimension: its ``slice_key`` and the projected column holding its (guarded) value."""

    key: str
    column: str
    protected: bool = False
    kind: Literal["column", "expression"] = "column"


@dataclass(frozen=True)
class Grouping:
    """The grouping of a run: window column plus slice dimensions (population = no dimension)."""

    slices: tuple[SliceDim, ...] = ()
    window: str = WINDOW
    # sketches and keyed aggregates by fanning rows out to their slices instead of via the cross product
    fan_out: bool = False
    # a small run: every aggregate in ONE fan-out aggregation (no split, join or upward merge)
    one_pass: bool = False
    # rows per finest cell (window x combination of slice values) when known: sizes keyed aggregations
    rows_per_cell: float | None = None

    @property
    def finest(self) -> list[str]:
        """Columns of the finest grain."""
        return [self.window, *[s.column for s in self.slices]]

    def for_keys(self, cardinality: int) -> Grouping:
        """The grouping of a keyed aggregation whose extra keys take up to ``cardinality`` values a cell.

        Its finest groups are cells x key values: with many key values (a 1000-bin score histogram) they
        hold a few rows each, the finest aggregation barely reduces the rows and its upward merge fans out
        almost as many; fanning the rows out directly is then the cheaper plan.
        """
        if self.fan_out or self.one_pass or not self.slices or self.rows_per_cell is None:
            return self
        if self.rows_per_cell / max(cardinality, 1) < KEYED_ROWS_PER_GROUP:
            return replace(self, fan_out=True)
        return self


def merge_column(name: str, merge: Merge) -> Column:
    """The aggregate that merges finest-grain values of ``name`` into a coarser group."""
    from pyspark.sql import functions as F

    col = F.col(f"`{name}`")
    if merge == "sum":
        return F.sum(col)
    if merge == "min":
        return F.min(col)
    if merge == "max":
        return F.max(col)
    if merge == "kll":
        return F.expr(f"kll_merge_agg_double(`{name}`)")
    if merge == "hll":
        return F.expr(f"hll_union_agg(`{name}`, true)")
    raise ValueError(f"unknown merge kind {merge!r}")


def slice_groups(grouping: Grouping) -> Column:
    """One row per group a row belongs to: the population ``(NULL, NULL)`` and ``(slice_key, value)`` per slice."""
    from pyspark.sql import functions as F

    groups = [F.struct(F.lit(None).cast("string").alias("k"), F.lit(None).cast("string").alias("v"))]
    groups += [
        F.struct(F.lit(d.key).alias("k"), F.col(d.column).cast("string").alias("v")) for d in grouping.slices
    ]
    return F.explode(F.array(*groups))


def merge_upward(
    finest: DataFrame, grouping: Grouping, merges: dict[str, Merge], extra_keys: Sequence[str] = ()
) -> DataFrame:
    """Merge a finest-grain aggregate to the whole population and to every slice, in ONE aggregation.

    Each finest-grain row is fanned out to the groups it belongs to (population, and one group per
    slice dimension), then a single ``groupBy`` merges them: one shuffle however many slices there are.
    ``finest`` is small (windows x slice combinations), so the fan-out costs nothing next to the scan.
    Returns rows keyed by ``window_start, slice_key, slice_value, *extra_keys`` (both slice columns NULL
    for the population).
    """
    from pyspark.sql import functions as F

    fanned = finest.withColumn("__g", slice_groups(grouping))
    aggs = [merge_column(n, m).alias(n) for n, m in merges.items()]
    merged = fanned.groupBy(
        F.col(grouping.window).alias("window_start"),
        F.col("__g.k").alias("slice_key"),
        F.col("__g.v").alias("slice_value"),
        *[F.col(f"`{k}`") for k in extra_keys],
    ).agg(*aggs)
    return merged


def aggregate(
    df: DataFrame,
    grouping: Grouping,
    aggs: Sequence[Agg],
    extra_keys: Sequence[str] = (),
    cached: list[DataFrame] | None = None,
) -> DataFrame:
    """Compute ``aggs`` for every window x group (population and each slice value) in one or two scans.

    Scalar aggregates (sums, counts, min, max) at the finest grain (window x combination of slice values),
    persisted (it is small) and merged up to every slice; the caller unpersists what ``cached`` collects.
    Sketches run in an object hash aggregate, without code generation, and would drag the scalar ones along
    (at 10M rows, k=200, measured apart: 60 s against 84 s for one aggregation): they get a scan of their own,
    joined on the group. They too are computed at the finest grain, or, when its groups hold few rows each
    (``grouping.fan_out``: a large cross product of slice values), by fanning each row out to its groups.
    A small run (``grouping.one_pass``) fans its rows out to a single aggregation of everything: below a few
    tens of thousands of rows the second aggregation, the join and the upward merge cost more than they save
    (1,000 rows: 5.3 s against 8-15 s for the aggregate phase; 33,000 rows: even).
    """
    from pyspark.sql import functions as F

    names = [a.name for a in aggs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"aggregate names must be unique: {sorted(dup)}")
    if grouping.one_pass:
        return _fan_out(df, grouping, aggs, extra_keys)
    keys = ["window_start", "slice_key", "slice_value", *extra_keys]
    sketches = [a for a in aggs if a.merge in SKETCH_MERGES]
    scalars = [a for a in aggs if a.merge not in SKETCH_MERGES]
    if sketches and scalars and not extra_keys:
        by_sketch = (
            _fan_out(df, grouping, sketches, extra_keys)
            if grouping.fan_out
            else _finest_merged(df, grouping, sketches, extra_keys, cached)
        )
        by_grain = _finest_merged(df, grouping, scalars, extra_keys, cached)
        on = [by_grain[k].eqNullSafe(by_sketch[k]) for k in keys]
        return by_grain.join(by_sketch, on, "inner").select(
            *[by_grain[k] for k in keys], *[F.col(f"`{a.name}`") for a in aggs]
        )
    if grouping.fan_out:
        return _fan_out(df, grouping, aggs, extra_keys)
    return _finest_merged(df, grouping, aggs, extra_keys, cached)


def _fan_out(df: DataFrame, grouping: Grouping, aggs: Sequence[Agg], extra_keys: Sequence[str]) -> DataFrame:
    """Each row fanned out to its groups (population and one per slice), then ONE aggregation."""
    from pyspark.sql import functions as F

    fanned = with_inputs(df, aggs).withColumn("__g", slice_groups(grouping))
    return fanned.groupBy(
        F.col(grouping.window).alias("window_start"),
        F.col("__g.k").alias("slice_key"),
        F.col("__g.v").alias("slice_value"),
        *[F.col(f"`{k}`") for k in extra_keys],
    ).agg(*[a.expr.alias(a.name) for a in aggs])


def _finest_merged(
    df: DataFrame,
    grouping: Grouping,
    aggs: Sequence[Agg],
    extra_keys: Sequence[str],
    cached: list[DataFrame] | None,
) -> DataFrame:
    """ONE aggregation at the finest grain (persisted: it is small), merged up to every slice."""
    finest = (
        with_inputs(df, aggs)
        .groupBy(*grouping.finest, *extra_keys)
        .agg(*[a.expr.alias(a.name) for a in aggs])
    )
    if grouping.slices:
        finest = finest.persist()
        if cached is not None:
            cached.append(finest)
    return merge_upward(finest, grouping, {a.name: a.merge for a in aggs}, extra_keys)


@dataclass(frozen=True)
class ColumnSet:
    """The monitored columns by kind (features, and the model's outputs and labels)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    roles: dict[str, str] = field(default_factory=dict)

    @property
    def all(self) -> tuple[str, ...]:
        """Every monitored column."""
        return (*self.numeric, *self.categorical)

    def role(self, column: str) -> str:
        """``feature``, ``score``, ``prediction`` or ``label``."""
        return self.roles.get(column, "feature")


def guard_slice_values(df: DataFrame, columns: Sequence[tuple[str, int]]) -> tuple[dict[str, list[str]], int]:
    """The most frequent values of each slice column (at most ``max_values`` each) and ``df``'s row count, in
    ONE aggregation.

    ``columns`` are ``(name, max_values)`` of columns of ``df`` that hold slice values as
    :func:`raw_slice_column` gives them (strings, NULL as ``__null__``). Values beyond the limit are grouped as
    ``__other__`` by :func:`slice_value_column`; the most frequent are kept, ties broken by the value. Only the
    kept values (bounded) reach the driver. The run calls it on its cached rows, so the action that fills the
    cache also counts the rows and finds the slices' values (no scan of the log of its own).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not columns:
        return {}, int(df.count())
    stacked = df.select(
        F.explode(
            F.array(*[F.struct(F.lit(c).alias("k"), F.col(f"`{c}`").alias("v")) for c, _ in columns])
        ).alias("kv")
    ).select("kv.k", "kv.v")
    counts = stacked.groupBy("k", "v").count()
    limits = F.create_map(*[x for c, n in columns for x in (F.lit(c), F.lit(n + 1))])
    by_column = Window.partitionBy("k")
    ranked = counts.withColumn("r", F.row_number().over(by_column.orderBy(F.desc("count"), "v"))).withColumn(
        "rows", F.sum("count").over(by_column)
    )
    kept = ranked.where(F.col("r") <= limits[F.col("k")]).collect()  # bounded: <= max_values+1 per column
    out: dict[str, list[tuple[int, str]]] = {c: [] for c, _ in columns}
    rows = 0
    for row in kept:
        out[row["k"]].append((row["r"], row["v"]))
        rows = int(row["rows"])  # every column counts every row once
    result: dict[str, list[str]] = {}
    for c, n in columns:
        vals = [v for _, v in sorted(out[c])]
        result[c] = [*vals[:n], OTHER] if len(vals) > n else vals
    return result, rows


def raw_slice_column(column: str) -> Column:
    """A slice column's value as a string, ``__null__`` for NULL (before :func:`slice_value_column`)."""
    from pyspark.sql import functions as F

    return F.coalesce(F.col(f"`{column}`").cast("string"), F.lit(NULL_VALUE))


def slice_value_column(raw: Column, kept: Sequence[str]) -> Column:
    """The guarded slice value of ``raw`` (a :func:`raw_slice_column`): itself if kept, else ``__other__``."""
    from pyspark.sql import functions as F

    keep = [v for v in kept if v != OTHER]
    if OTHER not in kept:
        return raw
    return F.when(raw.isin(keep), raw).otherwise(F.lit(OTHER))
