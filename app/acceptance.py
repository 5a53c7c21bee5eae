"""The acceptance test: a paired sequential t-test on the log-ratios of interleaved incumbent/candidate pairs.

Each pair gives d = log(gain of the candidate over the incumbent), > 0 when the candidate is better. After each
pair the mean of the round's d is bounded with Student's t, its spread pooled from the round's own pairs and the
run's recent ones (noise re-measured as the run goes). Every look spends alpha / max_pairs (Bonferroni), so the
chance that a candidate no better than its incumbent is accepted stays under alpha, however many looks were taken.
Accepted: the lower bound is above 1 and the estimate reaches the minimum effect. Rejected: the estimate cannot
reach the minimum effect (its upper bound at the futility level is below it), or the cap is reached undecided."""

import math
import statistics
from dataclasses import dataclass, field
from functools import cache


@dataclass
class Rule:
    min_effect: float = 0.05  # the smallest gain worth accepting: 5%
    alpha: float = 0.005  # false accepts per round, all looks together (half the 1% goal: real noise has tails)
    futility: float = 0.2  # chance that a gain of the minimum effect is stopped early as one that cannot reach it
    max_pairs: int = 6
    window: int = 30  # degrees of freedom of the run's recent pairs pooled into the spread

    @classmethod
    def for_target(cls, repeats: int) -> "Rule":
        """The cap from a target's benchmark repeats (the pairs the old rule measured): three times, at least 6."""
        return cls(max_pairs=max(6, 3 * repeats))


@dataclass
class Noise:
    """Squared deviations of the run's recent log-ratios from their round's mean, as (sum, degrees of freedom)."""

    parts: list[tuple[float, int]] = field(default_factory=list)

    def add(self, ratios: list[float], known_mean: float | None = None) -> None:
        """A round's log-ratios; known_mean 0 for pairs of one stack against itself (each pair a degree)."""
        if known_mean is not None:
            self.parts.append((sum((d - known_mean) ** 2 for d in ratios), len(ratios)))
        elif len(ratios) > 1:
            mean = statistics.fmean(ratios)
            self.parts.append((sum((d - mean) ** 2 for d in ratios), len(ratios) - 1))

    def recent(self, window: int) -> tuple[float, int]:
        total, df = 0.0, 0
        for ss, n in reversed(self.parts):
            if df >= window:
                break
            total, df = total + ss, df + n
        return total, df

    def spread(self, window: int) -> float | None:
        """The standard deviation of one pair's log-ratio, or None before any degree of freedom."""
        ss, df = self.recent(window)
        return math.sqrt(ss / df) if df else None


@dataclass
class Decision:
    verdict: str  # accept | reject | more
    gain: float
    low: float
    high: float
    pairs: int
    spread: float | None
    why: str = ""


def decide(ratios: list[float], noise: Noise, rule: Rule) -> Decision:
    """What the round's log-ratios so far say, given the run's recent noise."""
    k = len(ratios)
    mean = statistics.fmean(ratios)
    ss, df = noise.recent(rule.window)
    ss += sum((d - mean) ** 2 for d in ratios)
    df += k - 1
    if df < 1:
        more = "more" if k < rule.max_pairs else "reject"
        return Decision(more, math.exp(mean), 0.0, math.inf, k, None, "no spread measured yet")
    spread = math.sqrt(ss / df)
    se = spread / math.sqrt(k)
    q = t_quantile(1 - rule.alpha / rule.max_pairs, df)
    low, high = mean - q * se, mean + q * se
    floor = math.log1p(rule.min_effect)
    found = Decision("more", math.exp(mean), math.exp(low), math.exp(high), k, spread)
    if low > 0 and mean >= floor:
        found.verdict, found.why = "accept", "better beyond its interval"
    elif mean + t_quantile(1 - rule.futility, df) * se < floor:
        found.verdict, found.why = "reject", f"cannot reach the minimum {rule.min_effect:.0%} gain"
    elif k >= rule.max_pairs:
        found.verdict, found.why = "reject", f"not shown better in {k} pairs"
    return found


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function for a whole number of degrees of freedom (the closed forms)."""
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term, total = math.cos(theta), 0.0
        for j in range(3, df + 1, 2):
            total += term
            term *= c2 * (j - 1) / j
        inside = 2 / math.pi * (theta + s * total) if df > 1 else 2 * theta / math.pi
    else:
        term, total = 1.0, 0.0
        for j in range(2, df + 1, 2):
            total += term
            term *= c2 * (j - 1) / j
        inside = s * total
    return 0.5 + math.copysign(inside / 2, t)


@cache
def t_quantile(p: float, df: int) -> float:
    """The t with t_cdf(t, df) = p, for p above one half."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2
