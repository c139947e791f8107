"""Survey answers (safe against link scanners, one per message, promoter → advocate end to end),
referral landings and referral conversion, over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, select
from typer.testing import CliRunner

from ciclovita.db.models import (
    Customer,
    CustomerScore,
    Message,
    Order,
    Referral,
    StageHistory,
    SurveyResponse,
    table_of,
)
from ciclovita.delivery import outbox
from ciclovita.ingest.demo import generate_demo_data
from ciclovita.lifecycle import LifecycleConfig
from ciclovita.links import sign
from ciclovita.referrals import convert_referrals
from ciclovita.runtime import Runtime
from ciclovita.scoring.recompute import recompute_scores
from tests.builders import World
from tests.web_support import (  # noqa: F401 - the fixtures signing_key and web
    SECRET,
    WebServer,
    add_message,
    signing_key_fixture,
    web_fixture,
)


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def answers(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                SurveyResponse.customer_id,
                SurveyResponse.message_id,
                SurveyResponse.score,
                SurveyResponse.comment,
            ).order_by(SurveyResponse.id)
        )
        return [tuple(row) for row in rows]


def test_survey_links_record_one_answer_per_message_and_only_on_post(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    customer = world.customer("Sara", locale="it")
    uid = add_message(web.engine, customer, campaign="nps_survey")
    links = {score: path_of(web.links.survey(customer, uid, score)) for score in range(11)}

    # a link scanner fetching every score link of the email records nothing
    for path in links.values():
        assert web.http.get(path).status_code == 200
    assert answers(web.engine) == []
    page = web.http.get(links[9])
    assert 'class="chosen" aria-current="true">9<' in page.text and "Invia la risposta" in page.text

    thanks = web.http.post(links[9], data={"comment": "  Ottimo servizio <b>davvero</b>  "})
    assert thanks.status_code == 200 and "<strong>9</strong>" in thanks.text
    assert "&lt;b&gt;davvero&lt;/b&gt;" in thanks.text  # a comment is text, never markup
    (row,) = answers(web.engine)
    assert row[0] == customer and row[2:] == (9, "Ottimo servizio <b>davvero</b>")
    # the same link again (a second click, a prefetch): the thank-you page, still one answer
    assert "Grazie per la risposta" in web.http.get(links[9]).text
    web.http.post(links[9], data={})
    # the person picks another number: still one answer, the latest score, the comment kept
    web.http.post(links[3], data={})
    assert answers(web.engine) == [(customer, row[1], 3, "Ottimo servizio <b>davvero</b>")]

    # forged, out-of-range and foreign links change nothing
    token = links[10].removeprefix("/survey/")
    body, mac = token.split(".")
    assert web.http.post(f"/survey/{body}x.{mac}").status_code == 403
    assert (
        web.http.post(
            f"/survey/{sign({'p': 'survey', 'c': customer, 'm': uid, 's': 11}, 'nope')}"
        ).status_code
        == 403
    )
    assert (
        web.http.post(
            f"/survey/{sign({'p': 'survey', 'c': customer, 'm': uid, 's': 11}, SECRET)}"
        ).status_code
        == 400
    )
    stranger = world.customer("Ugo")
    assert web.http.post(path_of(web.links.survey(stranger, uid, 10))).status_code == 404
    assert answers(web.engine) == [(customer, row[1], 3, "Ottimo servizio <b>davvero</b>")]


def test_a_promoter_answer_makes_a_loyal_customer_an_advocate(web: WebServer) -> None:
    as_of = datetime.now(UTC) - timedelta(minutes=5)
    generate_demo_data(web.engine, customers=400, seed=7, as_of=as_of)
    config = LifecycleConfig()
    recompute_scores(web.engine, config, as_of)
    with web.engine.connect() as connection:
        loyal = connection.execute(
            select(CustomerScore.customer_id)
            .where(CustomerScore.stage == "loyal")
            .order_by(CustomerScore.customer_id)
            .limit(1)
        ).scalar_one()
    order = {
        "id": "A-1001",
        "amount_cents": 5_900,
        "currency": "EUR",
        "placed_at": as_of.isoformat(),
    }
    uid = add_message(
        web.engine, loyal, campaign="survey", at=as_of, locale="it", details={"order": order}
    )

    # the survey email as the dispatcher renders it; its score-10 link is what the person clicks
    runtime = Runtime(web.settings)
    with web.engine.connect() as connection:
        ((row, recipient),) = outbox.load_batch(connection, [_message_id(web.engine, uid)])
    email = runtime.builder.build(row, recipient)
    links = dict(re.findall(r'href="([^"]+/survey/[^"]+)" title="(\d+)"', email.html))
    assert len(links) == 11
    url = next(url for url, score in links.items() if score == "10")
    assert url.startswith(f"{web.url}/survey/")
    link = path_of(url)
    assert web.http.get(link).status_code == 200  # the confirm page
    assert web.http.post(link, data={"comment": "Lo consiglio a tutti"}).status_code == 200
    with web.engine.connect() as connection:
        assert (
            connection.execute(
                select(CustomerScore.nps).where(CustomerScore.customer_id == loyal)
            ).scalar_one()
            == 10
        )  # refreshed at once

    later = datetime.now(UTC) + timedelta(seconds=1)
    report = recompute_scores(web.engine, config, later)
    assert report.transitions.get("loyal→advocate", 0) >= 1
    with web.engine.connect() as connection:
        stage = connection.execute(
            select(StageHistory.stage, StageHistory.previous_stage, StageHistory.entered_at).where(
                StageHistory.customer_id == loyal, StageHistory.exited_at.is_(None)
            )
        ).one()
    assert (stage.stage, stage.previous_stage) == ("advocate", "loyal")


def _message_id(engine: Engine, uid: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(Message.id).where(Message.uid == uid)).scalar_one())


def _referral(engine: Engine, referrer: int, code: str, created: datetime) -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                insert(table_of(Referral))
                .values(
                    code=code,
                    referrer_id=referrer,
                    campaign="referral_request",
                    created_at=created,
                    visits=0,
                )
                .returning(table_of(Referral).c.id)
            ).scalar_one()
        )


def _order(
    engine: Engine,
    customer: int,
    placed: datetime,
    code: str | None,
    status: str = "completed",
    cents: int = 8_000,
) -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                insert(table_of(Order))
                .values(
                    external_id=f"ref-order-{customer}-{placed.timestamp()}-{status}",
                    customer_id=customer,
                    placed_at=placed,
                    amount_cents=cents,
                    currency="EUR",
                    status=status,
                    referral_code=code,
                )
                .returning(table_of(Order).c.id)
            ).scalar_one()
        )


def test_referral_landing_counts_visits_and_shows_a_welcome(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    referrer = world.customer("<i>Paola</i>")
    referral = _referral(web.engine, referrer, "CV-ABCD2345", datetime.now(UTC) - timedelta(days=3))
    page = web.http.get("/r/CV-ABCD2345", headers={"Accept-Language": "it-IT,it;q=0.9,en;q=0.5"})
    assert page.status_code == 200 and "Benvenuto!" in page.text
    assert "&lt;i&gt;Paola&lt;/i&gt; ti ha invitato" in page.text and "CV-ABCD2345" in page.text
    assert "Welcome!" in web.http.get("/r/cv-abcd2345", headers={"Accept-Language": "en-GB"}).text
    assert web.http.head("/r/CV-ABCD2345").status_code == 200  # link checkers: not a visit
    assert web.http.get("/r/NOPE-0000").status_code == 404
    assert web.http.get("/r/%3Cscript%3E").status_code == 404
    with web.engine.connect() as connection:
        visits, last = connection.execute(
            select(Referral.visits, Referral.last_visited_at).where(Referral.id == referral)
        ).one()
        assert connection.execute(select(func.sum(Referral.visits))).scalar_one() == 2
    assert visits == 2 and last is not None


def test_convert_referrals_credits_the_first_honest_order_once(engine: Engine) -> None:
    now = datetime.now(UTC)
    world = World(engine, now)
    referrer = world.customer("Rita", orders_days_ago=(300, 200, 100))
    friend = world.customer("Franco", created_days_ago=5)
    late_friend = world.customer("Luca", created_days_ago=5)
    referral = _referral(engine, referrer, "CV-FRIEND22", now - timedelta(days=10))
    other = _referral(engine, referrer, "CV-OTHER333", now - timedelta(days=10))
    own = _referral(engine, friend, "CV-SELF4444", now - timedelta(days=10))
    early = _referral(engine, referrer, "CV-EARLY555", now - timedelta(days=1))

    _order(engine, referrer, now - timedelta(days=4), "CV-OTHER333")  # own code: no
    _order(
        engine, friend, now - timedelta(days=3), "CV-FRIEND22", status="cancelled"
    )  # not completed
    first = _order(engine, friend, now - timedelta(days=2), " cv-friend22 ")  # typed by hand
    _order(engine, friend, now - timedelta(days=1), "CV-FRIEND22")  # a later order: not again
    _order(engine, friend, now - timedelta(hours=12), "CV-OTHER333")  # already a referee
    _order(engine, friend, now - timedelta(hours=11), "CV-SELF4444")  # own code
    _order(engine, late_friend, now - timedelta(days=2), "CV-EARLY555")  # before the code existed
    _order(engine, late_friend, now + timedelta(days=1), "CV-OTHER333")  # after as_of

    with engine.begin() as connection:
        report = convert_referrals(connection, now)
    assert report.converted == 1
    assert report.referrals == [
        {
            "code": "CV-FRIEND22",
            "referrer_id": referrer,
            "referee_id": friend,
            "order_id": first,
            "converted_at": (now - timedelta(days=2)).isoformat(),
        }
    ]
    with engine.connect() as connection:
        rows = {
            r.id: (r.referee_id, r.converted_at, r.converted_order_id)
            for r in connection.execute(select(Referral))
        }
        referred_by = connection.execute(
            select(Customer.referred_by_id).where(Customer.id == friend)
        ).scalar_one()
    assert rows[referral] == (friend, now - timedelta(days=2), first)
    assert rows[other] == rows[own] == rows[early] == (None, None, None)
    assert referred_by == referrer
    with engine.begin() as connection:
        assert convert_referrals(connection, now).converted == 0  # idempotent

    # the recompute credits the referrer with the referee's revenue
    recompute_scores(engine, LifecycleConfig(), now)
    with engine.connect() as connection:
        credited = connection.execute(
            select(CustomerScore.converted_referrals, CustomerScore.indirect_value_cents).where(
                CustomerScore.customer_id == referrer
            )
        ).one()
    assert tuple(credited) == (1, 4 * 8_000)  # the friend's four completed orders so far


def test_convert_referrals_from_the_command_line(engine: Engine, monkeypatch: Any) -> None:
    from ciclovita.cli.app import app
    from ciclovita.runtime import reset_runtimes

    now = datetime.now(UTC)
    world = World(engine, now)
    referrer = world.customer("Rita")
    friend = world.customer("Franco")
    _referral(engine, referrer, "CV-CLI00001", now - timedelta(days=10))
    _order(engine, friend, now - timedelta(days=1), "CV-CLI00001")
    monkeypatch.setenv("CICLOVITA_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    reset_runtimes()
    try:
        result = CliRunner().invoke(app, ["convert-referrals", "--json"])
    finally:
        reset_runtimes()
    assert result.exit_code == 0, result.output
    assert '"converted": 1' in result.output
