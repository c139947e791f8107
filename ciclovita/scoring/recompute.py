"""The recompute: every customer's facts, RFM, value and stage, written as a diff.

One grouped read of per-customer facts, vectorised scoring in memory, then only the rows that
changed are written: new customers inserted, changed scores updated, and stage changes
recorded in the stage history (the open row closed, a new one opened). The whole write is
one transaction: a failed recompute leaves the previous scores in place.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select

from ciclovita.db import bulk
from ciclovita.db.models import CustomerScore, ModelRun, StageHistory, table_of
from ciclovita.db.sqlfunctions import epoch_seconds
from ciclovita.lifecycle import STAGES, LifecycleConfig
from ciclovita.scoring.facts import read_facts
from ciclovita.scoring.rfm import (
    quintile_breakpoints,
    rfm_scores,
    rfm_segments,
    scores_from_breakpoints,
)
from ciclovita.scoring.stages import DAY, assign_stages, estimate_entered
from ciclovita.scoring.value import (
    ValueModel,
    buyer_sample,
    clv_percentile_points,
    fit_value_model,
    score_value,
)
from ciclovita.value.bgnbd import BgNbdParams
from ciclovita.value.gamma_gamma import GammaGammaParams

# Score columns compared to decide whether a row changed (times as Unix seconds).
COMPARED = (
    "stage",
    "order_count",
    "repeat_purchases",
    "first_order_s",
    "last_order_s",
    "last_engaged_s",
    "monetary_cents",
    "avg_order_cents",
    "r_score",
    "f_score",
    "m_score",
    "rfm_segment",
    "historical_clv_cents",
    "predicted_clv_cents",
    "clv_quantile",
    "expected_purchases",
    "p_alive",
    "expected_order_cents",
    "indirect_value_cents",
    "campaign_cost_cents",
    "net_value_cents",
    "nps",
    "converted_referrals",
)
TIME_COLUMNS = {
    "first_order_s": "first_order_at",
    "last_order_s": "last_order_at",
    "last_engaged_s": "last_engaged_at",
    "stage_since_s": "stage_since",
}


@dataclass
class RecomputeReport:
    """What a recompute found and wrote."""

    as_of: datetime
    customers: int = 0
    stage_counts: dict[str, int] = field(default_factory=dict)
    transitions: dict[str, int] = field(default_factory=dict)
    scores_inserted: int = 0
    scores_updated: int = 0
    stage_rows_opened: int = 0
    stage_rows_closed: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows_written(self) -> int:
        return (
            self.scores_inserted
            + self.scores_updated
            + self.stage_rows_opened
            + self.stage_rows_closed
        )


def _rfm_inputs(frame: pd.DataFrame, as_of: datetime) -> tuple[np.ndarray, ...]:
    """Buyer mask and the goodness of recency, frequency, monetary (higher is better)."""
    buyer = frame["order_count"].to_numpy() > 0
    last = frame["last_order_s"].astype("float64").to_numpy()
    recency_days = np.floor((as_of.timestamp() - last) / DAY)
    return (
        buyer,
        -recency_days,
        frame["purchase_days"].to_numpy(dtype=float),
        frame["monetary_cents"].to_numpy(dtype=float),
    )


def build_reference(
    facts: pd.DataFrame, model: ValueModel, config: LifecycleConfig, as_of: datetime
) -> ValueModel:
    """Fix, at fit time, the RFM breakpoints and CLV percentiles of the whole population.

    Until the next refit, scores are read against this reference, so a customer's R/F/M and
    CLV quantile change only when their own figures do (and a recompute after a few new
    orders writes only those customers). RFM breakpoints come from every buyer; CLV
    percentiles from the same seeded sample of buyers the models were fitted on.
    """
    buyer, recency, frequency, monetary = _rfm_inputs(facts, as_of)
    reference: dict[str, Any] = {
        "recency": quintile_breakpoints(recency[buyer]),
        "frequency": quintile_breakpoints(frequency[buyer]),
        "monetary": quintile_breakpoints(monetary[buyer]),
    }
    sample = buyer_sample(facts, config.value)
    values = score_value(sample, model, as_of, config.value)
    reference["clv"] = clv_percentile_points(values["predicted_clv_cents"].to_numpy(dtype=float))
    return replace(model, reference=reference)


def compute_scores(
    facts: pd.DataFrame, model: ValueModel, config: LifecycleConfig, as_of: datetime
) -> pd.DataFrame:
    """Every score column for every customer in ``facts`` (pure: no database)."""
    frame = facts.copy()
    buyer, recency, frequency, monetary = _rfm_inputs(frame, as_of)
    frame["repeat_purchases"] = np.maximum(frame["purchase_days"].to_numpy() - 1, 0)
    orders = frame["order_count"].to_numpy()
    frame["avg_order_cents"] = np.where(
        buyer, np.rint(frame["monetary_cents"] / np.maximum(orders, 1)), 0
    ).astype(np.int64)
    for column in ("r_score", "f_score", "m_score"):
        frame[column] = pd.array([pd.NA] * len(frame), dtype="Int64")
    frame["rfm_segment"] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if buyer.any():
        reference = model.reference
        if reference.get("recency") is not None:
            r = scores_from_breakpoints(recency[buyer], reference["recency"])
            f = scores_from_breakpoints(frequency[buyer], reference["frequency"])
            m = scores_from_breakpoints(monetary[buyer], reference["monetary"])
        else:
            r, f, m = rfm_scores(-recency[buyer], frequency[buyer], monetary[buyer])
        frame.loc[buyer, "r_score"] = r
        frame.loc[buyer, "f_score"] = f
        frame.loc[buyer, "m_score"] = m
        frame.loc[buyer, "rfm_segment"] = rfm_segments(r, f, m)
    value = score_value(facts, model, as_of, config.value)
    frame = frame.join(value.drop(columns=[c for c in value.columns if c in frame.columns]))
    frame["stage"] = assign_stages(frame, config, as_of)
    return frame


def _read_current(connection: Connection) -> pd.DataFrame:
    """The stored scores, for the diff (read through ``read_frame``: a million rows fast)."""
    s = CustomerScore
    columns = ["customer_id", "stage", "stage_since_s", *COMPARED[1:]]
    selected = {
        "stage_since_s": epoch_seconds(s.stage_since),
        **{seconds: epoch_seconds(getattr(s, column)) for seconds, column in TIME_COLUMNS.items()},
    }
    query = select(
        *(selected[name].label(name) if name in selected else getattr(s, name) for name in columns)
    )
    frame = bulk.read_frame(connection, query, columns).set_index("customer_id")
    for name in ("first_order_s", "last_order_s", "last_engaged_s", "r_score", "f_score"):
        frame[name] = frame[name].astype("Int64")
    for name in ("m_score", "nps"):
        frame[name] = frame[name].astype("Int64")
    for name in ("clv_quantile", "p_alive", "expected_purchases"):
        frame[name] = frame[name].astype("float64")
    for name in ("stage", "rfm_segment"):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


def _to_table(frame: pd.DataFrame, computed_at: datetime) -> pd.DataFrame:
    """Score frame → customer_scores columns (times as UTC datetimes)."""
    out = pd.DataFrame(index=frame.index)
    out["customer_id"] = frame.index.to_numpy()
    for name in COMPARED:
        if name in TIME_COLUMNS:
            continue
        out[name] = frame[name]
    for seconds, column in TIME_COLUMNS.items():
        out[column] = pd.to_datetime(frame[seconds].astype("float64"), unit="s", utc=True)
    out["computed_at"] = pd.Timestamp(computed_at).tz_convert("UTC")
    return out.reset_index(drop=True)


def latest_model(connection: Connection, as_of: datetime, max_age_days: int) -> ValueModel | None:
    """The last converged fit younger than ``max_age_days`` (and not after ``as_of``)."""
    if max_age_days <= 0:
        return None
    runs: dict[str, Any] = {}
    for model in ("bgnbd", "gamma_gamma", "reference"):
        run = (
            connection.execute(
                select(table_of(ModelRun))
                .where(
                    ModelRun.model == model,
                    ModelRun.converged.is_(True),
                    ModelRun.fitted_at <= as_of,
                    ModelRun.fitted_at > as_of - timedelta(days=max_age_days),
                )
                .order_by(ModelRun.fitted_at.desc(), ModelRun.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if run is None:
            return None
        runs[model] = run
    bg, gg = runs["bgnbd"], runs["gamma_gamma"]
    if bg["time_unit"] != gg["time_unit"]:
        return None
    return ValueModel(
        bgnbd=BgNbdParams(**bg["params"]),
        gamma_gamma=GammaGammaParams(**gg["params"]),
        bgnbd_log_likelihood=bg["log_likelihood"],
        gg_log_likelihood=gg["log_likelihood"],
        n_customers=bg["n_customers"],
        n_fitted=bg["n_fitted"],
        converged=True,
        time_unit=bg["time_unit"],
        fitted_at=bg["fitted_at"],
        reused=True,
        reference=dict(runs["reference"]["params"]),
    )


def _record_model(connection: Connection, model: ValueModel, cycle_id: int | None) -> None:
    """Keep the fit: both models' parameters and log-likelihoods, and the score reference."""
    note = {"note": model.note}
    rows: list[tuple[str, dict[str, Any], float | None]] = [
        ("bgnbd", model.bgnbd.as_dict() if model.bgnbd else note, model.bgnbd_log_likelihood),
        (
            "gamma_gamma",
            model.gamma_gamma.as_dict() if model.gamma_gamma else note,
            model.gg_log_likelihood,
        ),
        ("reference", model.reference, None),
    ]
    for name, params, loglik in rows:
        connection.execute(
            table_of(ModelRun)
            .insert()
            .values(
                model=name,
                fitted_at=model.fitted_at,
                params=params,
                log_likelihood=loglik,
                n_customers=model.n_customers,
                n_fitted=model.n_fitted,
                converged=model.converged,
                time_unit=model.time_unit,
                cycle_id=cycle_id,
            )
        )


def recompute_scores(
    engine: Engine,
    config: LifecycleConfig,
    as_of: datetime | None = None,
    *,
    cycle_id: int | None = None,
    refit: bool = False,
) -> RecomputeReport:
    """Recompute every customer's scores and stage as of ``as_of``; write only changes.

    One transaction: a failed recompute leaves the previous scores in place.
    """
    with engine.begin() as connection:
        report = recompute_scores_on(connection, config, as_of, cycle_id=cycle_id, refit=refit)
    if report.rows_written > max(bulk.BULK_WRITE_ROWS, report.customers // 10):
        started = time.perf_counter()
        bulk.vacuum(engine, "customer_scores", "stage_history")
        report.timings["vacuum"] = round(time.perf_counter() - started, 3)
    return report


def recompute_scores_on(
    connection: Connection,
    config: LifecycleConfig,
    as_of: datetime | None = None,
    *,
    cycle_id: int | None = None,
    refit: bool = False,
) -> RecomputeReport:
    """The recompute inside the caller's transaction (``ciclovita plan`` rolls it back)."""
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    report = RecomputeReport(as_of=as_of)
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.timings[name] = round(now - clock, 3)
        clock = now

    facts = read_facts(connection, as_of, config.engaged.events)
    lap("read_facts")
    model = None if refit else latest_model(connection, as_of, config.value.refit_after_days)
    if model is None:
        model = build_reference(facts, fit_value_model(facts, as_of, config.value), config, as_of)
        _record_model(connection, model, cycle_id)
    report.model = model.summary()
    lap("fit_value_model")
    scores = compute_scores(facts, model, config, as_of)
    lap("score")
    current = _read_current(connection)
    lap("read_current")
    _write(connection, scores, current, config, as_of, report)
    lap("write")
    report.customers = len(scores)
    counts = Counter(scores["stage"].tolist())
    report.stage_counts = {stage: counts.get(stage, 0) for stage in STAGES}
    return report


def _write(
    connection: Connection,
    scores: pd.DataFrame,
    current: pd.DataFrame,
    config: LifecycleConfig,
    as_of: datetime,
    report: RecomputeReport,
) -> None:
    now_s = int(as_of.timestamp())
    known = scores.index.isin(current.index)
    fresh = scores[~known].copy()
    fresh["stage_since_s"] = estimate_entered(fresh, fresh["stage"].to_numpy(), config, as_of)
    report.scores_inserted = bulk.insert_frame(
        connection, table_of(CustomerScore), _to_table(fresh, as_of)
    )
    history = pd.DataFrame(
        {
            "customer_id": fresh.index.to_numpy(),
            "stage": fresh["stage"].to_numpy(),
            "previous_stage": None,
            "entered_at": pd.to_datetime(fresh["stage_since_s"], unit="s", utc=True).to_numpy(),
        }
    )

    existing = scores[known]
    changed_mask = bulk.changed_rows(current, existing, COMPARED)
    changed = existing[changed_mask].copy()
    before = current.loc[changed.index]
    moved = changed["stage"].to_numpy() != before["stage"].to_numpy()
    changed["stage_since_s"] = np.where(moved, now_s, before["stage_since_s"].to_numpy())
    report.scores_updated = bulk.update_frame(
        connection, table_of(CustomerScore), "customer_id", _to_table(changed, as_of)
    )
    movers = changed[moved]
    report.stage_rows_closed = bulk.close_open_rows(
        connection, table_of(StageHistory), movers.index.to_numpy(), as_of
    )
    transitions = pd.DataFrame(
        {
            "customer_id": movers.index.to_numpy(),
            "stage": movers["stage"].to_numpy(),
            "previous_stage": before.loc[movers.index, "stage"].to_numpy(),
            "entered_at": pd.Timestamp(as_of).tz_convert("UTC"),
        }
    )
    opened = pd.concat([history, transitions], ignore_index=True) if len(movers) else history
    opened["entered_at"] = pd.to_datetime(opened["entered_at"], utc=True)
    report.stage_rows_opened = bulk.insert_frame(connection, table_of(StageHistory), opened)
    if report.rows_written > max(10_000, len(scores) // 10):
        bulk.refresh_statistics(connection, "customer_scores", "stage_history")
    pairs = Counter(
        f"{a}→{b}" for a, b in zip(transitions["previous_stage"], transitions["stage"], strict=True)
    )
    report.transitions = dict(pairs.most_common())
