"""Campaign results: the statistics of a campaign's experiment, on SQL bucket sums.

The data arrive aggregated in SQL (:mod:`~ciclovita.results.buckets`: per group, per customer
hash bucket, seven sums); nothing here reads the database or imports Prefect.

::

    buckets.py      ArmBuckets: the typed input, and the aggregation SQL does
    lift.py         estimate_lift: lifts, incremental conversions, revenue and profit,
                    95% and 80% intervals, CUPED
    score.py        the score interval and its working variance (the default interval)
    resampling.py   the bucket bootstrap (percentile, BCa, bootstrap-t), kept for comparison
    verdict.py      power_analysis, decide_verdict, analyse_campaign
    variants.py     compare_variants: P(best) and a winner only when it is earned
    simulation.py   experiments with a known effect, for the coverage proofs
"""

from ciclovita.results.buckets import DEFAULT_BUCKETS, SUM_COLUMNS, ArmBuckets, Group
from ciclovita.results.lift import (
    DEFAULT_METHOD,
    LEVELS,
    Cuped,
    Estimate,
    GroupSummary,
    Interval,
    IntervalMethod,
    LiftEstimates,
    NotEnoughData,
    ProfitInputs,
    estimate_lift,
)
from ciclovita.results.variants import (
    WINNER_PROBABILITY,
    VariantComparison,
    VariantResult,
    compare_variants,
)
from ciclovita.results.verdict import (
    DEFAULT_POWER,
    DEFAULT_TARGET_LIFT,
    SIGNIFICANCE,
    CampaignStatistics,
    PowerAnalysis,
    Verdict,
    analyse_campaign,
    decide_verdict,
    power_analysis,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_METHOD",
    "DEFAULT_POWER",
    "DEFAULT_TARGET_LIFT",
    "LEVELS",
    "SIGNIFICANCE",
    "SUM_COLUMNS",
    "WINNER_PROBABILITY",
    "ArmBuckets",
    "CampaignStatistics",
    "Cuped",
    "Estimate",
    "Group",
    "GroupSummary",
    "Interval",
    "IntervalMethod",
    "LiftEstimates",
    "NotEnoughData",
    "PowerAnalysis",
    "ProfitInputs",
    "VariantComparison",
    "VariantResult",
    "Verdict",
    "analyse_campaign",
    "compare_variants",
    "decide_verdict",
    "estimate_lift",
    "power_analysis",
]
