"""The recompute on a real database: stages, value, history, and writing only what changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ciclovita.db.models import CustomerScore, ModelRun, StageHistory
from ciclovita.ingest.demo import generate_demo_data
from ciclovita.lifecycle import STAGES, LifecycleConfig
from ciclovita.scoring.recompute import recompute_scores
from tests.builders import World, dict_of

AS_OF = datetime(2026, 6, 15, 10, tzinfo=UTC)


def test_stages_and_history_on_hand_made_customers(engine: Engine) -> None:
    world = World(engine, AS_OF)
    prospect = world.customer("Pia", created_days_ago=200)
    engaged = world.customer("Elio", created_days_ago=200)
    world.event(engaged, "site_visit", 2)
    newbie = world.customer("Nina", orders_days_ago=(5,))
    lapsed = world.customer("Lapo", orders_days_ago=(800, 700, 500))

    report = recompute_scores(engine, LifecycleConfig(), AS_OF)
    assert report.customers == 4
    assert report.scores_inserted == 4 and report.stage_rows_opened == 4
    with engine.connect() as connection:
        stages = dict_of(
            connection.execute(select(CustomerScore.customer_id, CustomerScore.stage)).all()
        )
        since = dict_of(
            connection.execute(select(CustomerScore.customer_id, CustomerScore.stage_since)).all()
        )
    assert stages == {
        prospect: "prospect",
        engaged: "engaged",
        newbie: "new_customer",
        lapsed: "lapsed",
    }
    # first classification: entry estimated from history, not "now"
    assert since[newbie] == AS_OF - timedelta(days=5)
    assert since[lapsed] == AS_OF - timedelta(days=500) + timedelta(days=365)

    # the prospect buys: a stage change, recorded as history
    world.order(prospect, 0.5)
    later = AS_OF + timedelta(hours=1)
    second = recompute_scores(engine, LifecycleConfig(), later)
    assert second.transitions == {"prospect→new_customer": 1}
    assert second.stage_rows_closed == 1 and second.stage_rows_opened == 1
    with engine.connect() as connection:
        history = connection.execute(
            select(
                StageHistory.stage,
                StageHistory.previous_stage,
                StageHistory.entered_at,
                StageHistory.exited_at,
            )
            .where(StageHistory.customer_id == prospect)
            .order_by(StageHistory.id)
        ).all()
    assert [(h.stage, h.previous_stage) for h in history] == [
        ("prospect", None),
        ("new_customer", "prospect"),
    ]
    assert (
        history[0].exited_at == later
        and history[1].entered_at == later
        and history[1].exited_at is None
    )


def test_rerun_writes_nothing_and_one_change_writes_one_row(engine: Engine) -> None:
    generate_demo_data(engine, customers=400, seed=7, as_of=AS_OF)
    config = LifecycleConfig()
    first = recompute_scores(engine, config, AS_OF)
    assert first.customers == 400
    assert sum(first.stage_counts.values()) == 400
    assert set(first.stage_counts) == set(STAGES)
    assert first.model["converged"], first.model
    again = recompute_scores(engine, config, AS_OF)
    assert again.model["reused"] is True
    assert again.rows_written == 0

    with engine.connect() as connection:
        buyer = connection.execute(
            select(CustomerScore.customer_id).where(CustomerScore.order_count > 2).limit(1)
        ).scalar_one()
    World(engine, AS_OF).order(buyer, 0.2, amount_cents=12_345)
    third = recompute_scores(engine, config, AS_OF)
    # scores are read against the fit's reference: only the buyer's own row changes
    assert third.scores_updated == 1
    assert third.scores_inserted == 0


def test_value_is_never_nan_and_prospects_have_no_p_alive(engine: Engine) -> None:
    generate_demo_data(engine, customers=300, seed=11, as_of=AS_OF)
    recompute_scores(engine, LifecycleConfig(), AS_OF)
    with Session(engine) as session:
        rows = session.execute(select(CustomerScore)).scalars().all()
        runs = session.execute(
            select(ModelRun.model, ModelRun.params, ModelRun.log_likelihood)
        ).all()
    assert {r.model for r in runs} == {"bgnbd", "gamma_gamma", "reference"}
    fits = [r for r in runs if r.model != "reference"]
    assert all(r.log_likelihood is not None and r.log_likelihood < 0 for r in fits)
    reference = next(r.params for r in runs if r.model == "reference")
    assert len(reference["clv"]) == 101 and len(reference["recency"]) == 4
    for row in rows:
        assert row.predicted_clv_cents >= 0
        assert row.expected_purchases == row.expected_purchases  # not NaN
        if row.order_count == 0:
            assert row.p_alive is None and row.predicted_clv_cents == 0 and row.r_score is None
        else:
            assert row.p_alive is not None and 0.0 <= row.p_alive <= 1.0
            assert row.r_score in range(1, 6) and row.rfm_segment is not None
            assert row.historical_clv_cents == row.monetary_cents


def test_tiny_history_gets_well_defined_values(engine: Engine) -> None:
    world = World(engine, AS_OF)
    one = world.customer("Uno", orders_days_ago=(45,))
    report = recompute_scores(engine, LifecycleConfig(), AS_OF)
    assert "too little history" in report.model["note"]
    with Session(engine) as session:
        row = session.execute(
            select(CustomerScore).where(CustomerScore.customer_id == one)
        ).scalar_one()
    assert row.stage == "active"
    assert (
        row.p_alive is None and row.predicted_clv_cents == 0 and row.expected_order_cents == 5_000
    )


@pytest.mark.parametrize("refit", [True])
def test_refit_records_a_new_model_run(engine: Engine, refit: bool) -> None:
    generate_demo_data(engine, customers=300, seed=5, as_of=AS_OF)
    recompute_scores(engine, LifecycleConfig(), AS_OF)
    recompute_scores(engine, LifecycleConfig(), AS_OF, refit=refit)
    with engine.connect() as connection:
        assert len(connection.execute(select(ModelRun.id)).all()) == 6
