"""Unsubscribe (RFC 8058 one-click) and the preference page, over real HTTP and in Chromium.

The browser test drives Debian's ``chromium`` through Playwright (never ``playwright
install``) and saves screenshots under ``test-artifacts/``. Without ``/usr/bin/chromium`` it
skips, unless ``CI=true``, where it fails: CI installs chromium (``.ci/run``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from ciclovita.campaigns.catalog import load_catalog
from ciclovita.db.models import Consent, Message
from ciclovita.delivery import outbox
from ciclovita.links import LinkBuilder, sign
from ciclovita.planning.planner import plan_campaign
from ciclovita.runtime import Runtime
from ciclovita.settings import REPOSITORY_ROOT
from tests.builders import World
from tests.support.chromium import headless_chromium
from tests.web_support import (  # noqa: F401 - the fixtures signing_key and web
    SECRET,
    WebServer,
    add_message,
    signing_key_fixture,
    web_fixture,
)

ARTIFACTS = REPOSITORY_ROOT / "test-artifacts"


def consents(engine: Engine, customer_id: int) -> dict[str, tuple[bool, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Consent.topic, Consent.granted, Consent.source).where(
                Consent.customer_id == customer_id
            )
        )
        return {topic: (granted, source) for topic, granted, source in rows}


def one_click(web: WebServer, path: str) -> httpx.Response:
    """What a mail client posts for RFC 8058 one-click unsubscribe."""
    return web.http.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_one_click_unsubscribe_and_the_confirm_page(web: WebServer) -> None:
    as_of = datetime.now(UTC)
    world = World(web.engine, as_of)
    customer = world.customer("Giulia", consents=("marketing", "surveys"), orders_days_ago=(1.5,))
    order = {"id": "A-7", "amount_cents": 4_200, "currency": "EUR", "placed_at": as_of.isoformat()}
    uid = add_message(
        web.engine, customer, campaign="thank_you", locale="it", details={"order": order}
    )
    # the List-Unsubscribe header of the email as the dispatcher builds it
    with web.engine.connect() as connection:
        message_id = connection.execute(select(Message.id).where(Message.uid == uid)).scalar_one()
        ((row, recipient),) = outbox.load_batch(connection, [message_id])
    email = Runtime(web.settings).builder.build(row, recipient)
    assert email.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = email.headers["List-Unsubscribe"].strip("<>")
    assert url == web.links.unsubscribe(customer, uid, "marketing")

    # a link scanner (or the person) opening the link: a confirm page, nothing changes
    page = web.http.get(path_of(url))
    assert page.status_code == 200
    assert "Vuoi disiscriverti?" in page.text and 'name="List-Unsubscribe"' in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert consents(web.engine, customer)["marketing"][0] is True

    # the mail client's one-click POST (RFC 8058), to the same URL as List-Unsubscribe
    done = one_click(web, path_of(url))
    assert done.status_code == 200 and "sei disiscritto" in done.text
    granted, source = consents(web.engine, customer)["marketing"]
    assert granted is False and source == f"unsubscribe:{uid}"
    assert consents(web.engine, customer)["surveys"][0] is True  # other topics untouched
    with web.engine.connect() as connection:
        first_time = connection.execute(
            select(Consent.recorded_at).where(
                Consent.customer_id == customer, Consent.topic == "marketing"
            )
        ).scalar_one()
    # the same one-click again, as multipart/form-data: still 200, the first time is kept
    again = web.http.post(path_of(url), files={"List-Unsubscribe": (None, "One-Click")})
    assert again.status_code == 200
    with web.engine.connect() as connection:
        assert (
            connection.execute(
                select(Consent.recorded_at).where(
                    Consent.customer_id == customer, Consent.topic == "marketing"
                )
            ).scalar_one()
            == first_time
        )
    assert "Sei già disiscritto" in web.http.get(path_of(url)).text

    # the next plan honours it
    catalog = load_catalog(REPOSITORY_ROOT / "campaigns")
    with web.engine.begin() as connection:
        plan_campaign(connection, catalog, catalog.campaign("thank_you"), as_of)
        reason = connection.execute(
            select(Message.skip_reason).where(
                Message.campaign == "thank_you",
                Message.customer_id == customer,
                Message.occurrence_key.like("order:%"),
            )
        ).scalar_one()
    assert reason == "no_consent"


def test_forged_or_altered_links_change_nothing(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    customer = world.customer("Marta", locale="en", consents=("marketing",))
    other = world.customer("Otto", locale="en", consents=("marketing",))
    uid = add_message(web.engine, customer)
    good = path_of(web.links.unsubscribe(customer, uid, "marketing"))
    body, mac = good.removeprefix("/u/").split(".")
    stolen_mac = path_of(web.links.unsubscribe(other, uid, "marketing")).split(".")[1]
    forged = {
        "altered payload": f"/u/{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{mac}",
        "another customer's mac": f"/u/{body}.{stolen_mac}",
        "another secret": path_of(
            LinkBuilder(web.url, "guess").unsubscribe(other, uid, "marketing")
        ),
        "wrong purpose": "/u/"
        + path_of(web.links.preferences(customer)).removeprefix("/preferences/"),
        "garbage": "/u/not-a-token",
        "no mac": f"/u/{body}",
    }
    for name, path in forged.items():
        for response in (web.http.get(path), one_click(web, path)):
            assert response.status_code == 403, name
            assert "This link is not valid" in response.text, name
            assert "nothing was changed" in response.text
    prefs_forged = f"/preferences/{body}.{mac}"
    assert web.http.post(prefs_forged, data={"topic": []}).status_code == 403
    assert consents(web.engine, customer)["marketing"][0] is True
    assert consents(web.engine, other)["marketing"][0] is True

    # valid signature, bad content or request: 400; a customer that is gone: 404
    bad_topic = sign({"p": "unsub", "c": customer, "m": uid, "t": "everything"}, SECRET)
    assert web.http.get(f"/u/{bad_topic}").status_code == 400
    assert web.http.post(good, data={"List-Unsubscribe": "please"}).status_code == 400
    gone = sign({"p": "unsub", "c": 999_999, "m": uid, "t": "marketing"}, SECRET)
    assert one_click(web, f"/u/{gone}").status_code == 404
    assert web.http.get("/no/such/page").status_code == 404
    assert consents(web.engine, customer)["marketing"][0] is True


def test_preference_page_shows_and_saves_topics_in_the_customers_language(
    web: WebServer,
) -> None:
    world = World(web.engine, datetime.now(UTC))
    english = world.customer("Emma", locale="en", consents=("marketing",))
    italian = world.customer("Italo", locale="it", consents=())
    path = path_of(web.links.preferences(english))
    page = web.http.get(path)
    assert page.status_code == 200 and "Your preferences" in page.text
    assert re.search(r'value="marketing" id="topic-marketing" checked', page.text)
    assert not re.search(r'value="surveys" id="topic-surveys" checked', page.text)

    saved = web.http.post(path, data={"topic": ["surveys", "newsletter", "not-a-topic"]})
    assert saved.status_code == 200 and "Preferences saved." in saved.text
    assert consents(web.engine, english) == {
        "marketing": (False, "preferences_page"),
        "surveys": (True, "preferences_page"),
        "newsletter": (True, "preferences_page"),
    }
    assert "Le tue preferenze" in web.http.get(path_of(web.links.preferences(italian))).text


def test_customer_data_cannot_inject_markup(web: WebServer) -> None:
    world = World(web.engine, datetime.now(UTC))
    evil = world.customer("<script>alert(1)</script>", email="evil@example.com", locale="en")
    uid = add_message(web.engine, evil)
    page = web.http.get(path_of(web.links.unsubscribe(evil, uid, "marketing")))
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


# ------------------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with headless_chromium() as browser:
        yield browser


def test_unsubscribe_and_preferences_in_a_browser(
    web: WebServer, chromium: Any, request: pytest.FixtureRequest
) -> None:
    world = World(web.engine, datetime.now(UTC))
    customer = world.customer("Giulia", locale="it", consents=("marketing", "surveys"))
    uid = add_message(web.engine, customer)
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    context = chromium.new_context(locale="it-IT", viewport={"width": 720, "height": 900})
    page = context.new_page()
    try:
        page.goto(web.links.unsubscribe(customer, uid, "marketing"))
        assert page.locator("h1").inner_text() == "Vuoi disiscriverti?"
        page.screenshot(path=str(ARTIFACTS / f"{name}-1-confirm.png"), full_page=True)
        assert consents(web.engine, customer)["marketing"][0] is True  # opening changed nothing

        page.click("#confirm")
        page.wait_for_selector("text=Fatto: sei disiscritto")
        page.screenshot(path=str(ARTIFACTS / f"{name}-2-unsubscribed.png"), full_page=True)
        assert consents(web.engine, customer)["marketing"][0] is False

        page.click("text=Le mie preferenze")
        page.wait_for_selector("#topic-marketing")
        assert not page.is_checked("#topic-marketing")
        assert page.is_checked("#topic-surveys")
        page.check("#topic-newsletter")
        page.uncheck("#topic-surveys")
        page.click("#save")
        page.wait_for_selector("#saved")
        page.screenshot(path=str(ARTIFACTS / f"{name}-3-preferences.png"), full_page=True)
        assert page.is_checked("#topic-newsletter") and not page.is_checked("#topic-surveys")
    finally:
        context.close()
    assert {t: g for t, (g, _s) in consents(web.engine, customer).items()} == {
        "marketing": False,
        "surveys": False,
        "newsletter": True,
    }
    assert (ARTIFACTS / f"{name}-3-preferences.png").stat().st_size > 1_000
