"""The statistics behind compare and report: intervals, corrections, rank tests, variance sources.

Pure numpy / scipy functions on plain numbers; what they are applied to (records, scores files)
is :mod:`osrbench.analysis`. Where scipy is used it is for distributions whose API and values have
been stable for many releases (``t``, ``chi2``, ``f``, ``norm``, ``nct``, ``studentized_range``);
the tests themselves (Holm, Friedman ranks, the bootstrap, the variance decomposition) are written
out here, as is the exact Wilcoxon test in :mod:`osrbench.compare`, because scipy's
``wilcoxon(method='auto')`` changed what it computes in 1.15 and ``friedmanchisquare`` refuses
fewer than three methods.

Conventions:

- An :class:`Interval` is two-sided at ``level`` (default 0.95). Bootstrap intervals are
  percentile intervals (the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled
  statistic, numpy's linear interpolation); they are seeded by the caller and reproducible.
- Over splits, the t-interval is ``mean +- t(n-1) s / sqrt(n)`` with the sample std; the bootstrap
  of the mean resamples the splits with replacement. With 5 splits both are rough and the
  bootstrap one is too narrow (it cannot see values beyond the 5 observed); both are labelled.
- Ranks: 1 = best, ties get the average of their ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

#: Default number of bootstrap resamples (``--resamples``).
RESAMPLES = 1000
#: Default two-sided confidence level (``--level``).
LEVEL = 0.95
#: Significance level of the rank tests and the critical difference (Demsar 2006 uses 0.05).
ALPHA = 0.05
#: Power the seeds planner asks for (the usual 80%).
POWER = 0.8
#: The planner gives up above this many seeds per split.
MAX_SEEDS = 1000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float

    def __contains__(self, x: float) -> bool:
        return self.low <= x <= self.high

    @property
    def finite(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)


NAN_INTERVAL = Interval(math.nan, math.nan, LEVEL)


def check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return level


def percentile_interval(samples: Sequence[float] | np.ndarray, level: float = LEVEL) -> Interval:
    """The percentile interval of bootstrap ``samples`` (NaN samples are an error, not dropped)."""
    x = np.asarray(samples, dtype=np.float64)
    level = check_level(level)
    if x.size == 0:
        return Interval(math.nan, math.nan, level)
    if np.isnan(x).any():
        raise ValueError("bootstrap samples contain NaN")
    lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(lo), float(hi), level)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)`` (sample std); NaN for fewer than 2 values."""
    from scipy.stats import t

    x = np.asarray(values, dtype=np.float64)
    level = check_level(level)
    if x.size < 2:
        return Interval(math.nan, math.nan, level)
    m = float(x.mean())
    half = float(t.ppf((1 + level) / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(m - half, m + half, level)


def bootstrap_mean(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
                   level: float = LEVEL) -> Interval:
    """Percentile interval of the mean of ``values`` resampled with replacement ``resamples`` times."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Interval(math.nan, math.nan, check_level(level))
    rng = np.random.default_rng([seed, x.size])
    idx = rng.integers(0, x.size, size=(check_resamples(resamples), x.size))
    return percentile_interval(x[idx].mean(axis=1), level)


#: The most bootstrap resamples a comparison draws: the Monte Carlo error of an interval's ends
#: shrinks as 1/sqrt(N) and is far below the printed 0.01 points well before this, while the cost
#: grows with N (about 33 s per 1,000 for 7 metrics over 30 digits runs).
MAX_RESAMPLES = 100_000


def min_resamples(level: float) -> int:
    """The fewest resamples a percentile interval at ``level`` needs: one in each tail of (1 - level) / 2."""
    return math.ceil(round(2 / (1 - level), 3))  # rounded first: 1 - 0.99999 is not 1e-5 in floating point


def check_resamples(resamples: int) -> int:
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or not (
            1 <= resamples <= MAX_RESAMPLES):
        raise ValueError(f"the number of resamples must be an integer in 1..{MAX_RESAMPLES:,}, got {resamples!r}")
    return int(resamples)


def stratified_resamples(n_known: int, n_unknown: int, resamples: int, seed: Sequence[int]):
    """Yield ``resamples`` pairs ``(known_idx, unknown_idx)``: each group drawn with replacement
    from itself (a stratified bootstrap keeps the known / unknown counts of the test set).

    The stream depends only on ``seed`` and the two counts, so every method evaluated on the same
    test set gets the same resamples: their difference is a paired bootstrap.
    """
    rng = np.random.default_rng([*seed, n_known, n_unknown])
    for _ in range(check_resamples(resamples)):
        yield rng.integers(0, n_known, n_known), rng.integers(0, n_unknown, n_unknown)


# ------------------------------------------------------------------------ multiple comparisons


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaN p-values stay NaN and do not count).

    Sorted ascending ``p_(1) <= ... <= p_(m)``, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``;
    reject ``H_(i)`` at level alpha exactly when ``adj_(i) <= alpha``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    running = 0.0
    for j, i in enumerate(ok[np.argsort(p[ok], kind="mergesort")]):
        running = max(running, min(1.0, (m - j) * float(p[i])))
        out[i] = running
    return [float(v) for v in out]


# ------------------------------------------------------------------------------- rank tests


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks 1..n of ``x`` ascending, ties getting the average of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    ranks = np.empty(x.size)
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def block_ranks(table: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Rank the methods (columns) within each block (row): 1 = best, ties averaged."""
    t = np.asarray(table, dtype=np.float64)
    return np.stack([average_ranks(-row if higher_is_better else row) for row in t])


@dataclass(frozen=True)
class Friedman:
    """The Friedman test of ``k`` methods over ``n`` blocks (datasets / protocols)."""

    methods: list[str]
    mean_ranks: list[float]  # per method, 1 = best
    n: int
    k: int
    chi2: float  # Friedman's statistic, with the tie correction
    p_chi2: float  # chi-square with k - 1 df
    f: float  # Iman and Davenport's F = (n - 1) chi2 / (n (k - 1) - chi2)
    p_f: float  # F with (k - 1, (k - 1)(n - 1)) df
    cd: float  # Nemenyi critical difference at ALPHA
    alpha: float

    def as_dict(self) -> dict:
        from osrbench.results import json_number as num

        return {"methods": self.methods, "mean_ranks": dict(zip(self.methods, self.mean_ranks)),
                "n_blocks": self.n, "chi2": num(self.chi2), "p_friedman": num(self.p_chi2),
                "iman_davenport_f": num(self.f), "p_iman_davenport": num(self.p_f),
                "nemenyi_cd": num(self.cd), "alpha": self.alpha}


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference ``q_alpha sqrt(k (k + 1) / (6 n))``, ``q_alpha`` the
    studentized range quantile with infinite df over sqrt(2) (Demsar 2006, Table 5)."""
    from scipy.stats import studentized_range

    if k < 2 or n < 1:
        return math.nan
    q = float(studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2.0)
    return q * math.sqrt(k * (k + 1) / (6.0 * n))


def p_t_text(p: float, n: int) -> str:
    """A paired t-test's p as a table shows it: ``n/a (df 1)`` for two pairs, where it rests on one
    degree of freedom (two differences say nothing of their spread's shape: p = 0.0003 from two
    splits whose Wilcoxon p cannot go below 0.5), ``n/a`` where it is undefined."""
    if n == 2:
        return "n/a (df 1)"
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.0001" if p < 0.0001 else f"{p:.3g}"


def friedman(table: np.ndarray, methods: Sequence[str], higher_is_better: bool = True,
             alpha: float = ALPHA) -> Friedman:
    """Friedman test on ``table`` (blocks x methods), with ranks 1 = best.

    ``chi2 = (12 / (n k (k+1)) sum_j R_j^2 - 3 n (k+1)) / C`` where ``R_j`` are rank sums and
    ``C = 1 - sum(t^3 - t) / (n (k^3 - k))`` corrects for ties within blocks (as scipy's
    ``friedmanchisquare``, which needs k >= 3; this one also takes k = 2).
    """
    from scipy.stats import chi2 as chi2_dist, f as f_dist

    t = np.asarray(table, dtype=np.float64)
    n, k = t.shape
    ranks = block_ranks(t, higher_is_better)
    sums = ranks.sum(axis=0)
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    c = 1.0 - ties / (n * (k**3 - k)) if k > 1 else 0.0
    if n < 2 or k < 2 or c <= 0.0:
        stat = p = fstat = pf = math.nan
    else:
        stat = (12.0 / (n * k * (k + 1)) * float(np.sum(sums**2)) - 3.0 * n * (k + 1)) / c
        p = float(chi2_dist.sf(stat, k - 1))
        denom = n * (k - 1) - stat
        # chi2 at its maximum n (k - 1) (every block ranks the methods alike): F = x / 0, undefined,
        # whatever chi2's p says (two blocks: chi2 p 0.157); NaN, shown "n/a", never inf and p = 0
        fstat = (n - 1) * stat / denom if denom > 0 else math.nan
        pf = float(f_dist.sf(fstat, k - 1, (k - 1) * (n - 1))) if math.isfinite(fstat) else math.nan
    return Friedman(list(methods), [float(r) for r in sums / n], n, k, stat, p, fstat, pf,
                    nemenyi_cd(k, n, alpha), alpha)


def rank_posthoc(fr: Friedman) -> list[tuple[str, str, float, float, float]]:
    """All pairs after a Friedman test: ``(a, b, z, p, p_holm)`` with
    ``z = (R_a - R_b) / sqrt(k (k + 1) / (6 n))`` two-sided normal (Demsar 2006, section 3.2.2)."""
    from scipy.stats import norm

    se = math.sqrt(fr.k * (fr.k + 1) / (6.0 * fr.n)) if fr.n else math.nan
    rows = []
    for i in range(fr.k):
        for j in range(i + 1, fr.k):
            z = (fr.mean_ranks[i] - fr.mean_ranks[j]) / se
            rows.append((fr.methods[i], fr.methods[j], z, float(2 * norm.sf(abs(z)))))
    adjusted = holm([r[3] for r in rows])
    return [(*r, a) for r, a in zip(rows, adjusted)]


def cliques(mean_ranks: Sequence[float], cd: float) -> list[list[int]]:
    """Maximal runs of methods (indices, by rank) whose mean ranks differ by less than ``cd``:
    the bars of a critical-difference diagram. Runs of one method are left out."""
    order = sorted(range(len(mean_ranks)), key=lambda i: mean_ranks[i])
    out: list[list[int]] = []
    for a in range(len(order)):
        b = a
        while b + 1 < len(order) and mean_ranks[order[b + 1]] - mean_ranks[order[a]] < cd:
            b += 1
        run = order[a:b + 1]
        if len(run) > 1 and not (out and set(run) <= set(out[-1])):
            out.append(run)
    return out


# --------------------------------------------------------------------- where variance comes from


@dataclass(frozen=True)
class Variance:
    """One-way random-effects decomposition of values grouped by split (seeds within a split).

    ``value = mu + split effect (var split_var) + seed noise (var seed_var)``, estimated by the
    ANOVA method of moments: ``seed_var = MS_within``, ``split_var = max(0, (MS_between -
    MS_within) / n0)`` with ``n0 = (N - sum n_i^2 / N) / (a - 1)`` (= seeds per split when
    balanced). NaN where it cannot be estimated (fewer than 2 splits, or no split with 2 seeds).
    """

    split_var: float
    seed_var: float
    n_splits: int
    n0: float
    ms_between: float
    ms_within: float

    @property
    def split_share(self) -> float:
        total = self.split_var + self.seed_var
        return self.split_var / total if total > 0 else math.nan


def variance_components(groups: Mapping[int, Sequence[float]]) -> Variance:
    """:class:`Variance` of ``{split: [value per seed]}``."""
    gs = [np.asarray(v, dtype=np.float64) for v in groups.values() if len(v)]
    a = len(gs)
    sizes = np.array([g.size for g in gs], dtype=np.float64)
    big_n = float(sizes.sum())
    df_within = big_n - a
    if a == 0 or df_within < 1:
        return Variance(math.nan, math.nan, a, math.nan, math.nan, math.nan)
    grand = float(np.concatenate(gs).mean())
    ss_within = float(sum(((g - g.mean()) ** 2).sum() for g in gs))
    ms_within = ss_within / df_within
    if a < 2:
        return Variance(math.nan, ms_within, a, math.nan, math.nan, ms_within)
    ss_between = float(sum(g.size * (g.mean() - grand) ** 2 for g in gs))
    ms_between = ss_between / (a - 1)
    n0 = (big_n - float((sizes**2).sum()) / big_n) / (a - 1)
    return Variance(max(0.0, (ms_between - ms_within) / n0), ms_within, a, n0, ms_between, ms_within)


def power_paired_t(delta: float, split_var: float, seed_var: float, n_splits: int, seeds: int,
                   alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test over ``n_splits`` split means (each the mean of
    ``seeds`` seeds) to detect a true mean difference ``delta``: with normal effects the t
    statistic is noncentral t, df ``n_splits - 1``, noncentrality ``delta / sqrt((split_var +
    seed_var / seeds) / n_splits)``."""
    from scipy.stats import nct, t

    df = n_splits - 1
    var = split_var + seed_var / seeds
    if df < 1 or not math.isfinite(var):
        return math.nan
    crit = float(t.ppf(1 - alpha / 2, df))
    if var <= 0:
        return 1.0 if delta != 0 else alpha
    nc = abs(delta) / math.sqrt(var / n_splits)
    # P(T < -crit | nc) as P(T > crit | -nc): scipy's nct.cdf far in the lower tail returns NaN
    # (e.g. df 5, nc >= 12), which made the seeds planner bisect on NaN; the sf form does not.
    return float(nct.sf(crit, df, nc) + nct.sf(crit, df, -nc))


def seeds_needed(delta: float, split_var: float, seed_var: float, n_splits: int, alpha: float = ALPHA,
                 power: float = POWER, max_seeds: int = MAX_SEEDS) -> int | None:
    """The fewest seeds per split at which :func:`power_paired_t` reaches ``power``; ``None`` when
    no number up to ``max_seeds`` does (the split variance alone is too large for ``n_splits``)."""
    if not all(math.isfinite(x) for x in (delta, split_var, seed_var)) or delta == 0 or n_splits < 2:
        return None
    f: Callable[[int], float] = lambda r: power_paired_t(delta, split_var, seed_var, n_splits, r, alpha)
    if f(max_seeds) < power:
        return None
    lo, hi = 1, max_seeds  # power rises with seeds: bisect for the first that is enough
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def splits_needed(delta: float, split_var: float, seed_var: float, seeds: int, alpha: float = ALPHA,
                  power: float = POWER, max_splits: int = 1000) -> int | None:
    """The fewest splits (at ``seeds`` seeds each) at which the paired t-test reaches ``power``."""
    if not all(math.isfinite(x) for x in (delta, split_var, seed_var)) or delta == 0:
        return None
    for n in range(2, max_splits + 1):
        if power_paired_t(delta, split_var, seed_var, n, seeds, alpha) >= power:
            return n
    return None


# ---------------------------------------------------------------------------- per-class AUROC


def class_aurocs(known_scores: np.ndarray, known_classes: np.ndarray, unknown_scores: np.ndarray,
                 unknown_classes: np.ndarray, auroc: Callable[[np.ndarray, np.ndarray], float]
                 ) -> tuple[dict[int, float], dict[int, float]]:
    """``(per unknown class, per known class)`` AUROC: every known against the unknowns of one
    class; the knowns of one class against every unknown."""
    ks, kc = np.asarray(known_scores), np.asarray(known_classes)
    us, uc = np.asarray(unknown_scores), np.asarray(unknown_classes)
    by_unknown = {int(c): float(auroc(ks, us[uc == c])) for c in np.unique(uc)}
    by_known = {int(c): float(auroc(ks[kc == c], us)) for c in np.unique(kc)}
    return by_unknown, by_known
