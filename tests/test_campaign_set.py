"""Every campaign in campaigns/ renders for real, in every locale and every A/B variant.

No mocks: the catalogue is loaded from the repository's campaigns/, the trigger details come
from the planner's own detail builders (``trigger_query``) and the offer details are built as
``plan_campaign`` stores them, round-tripped through JSON like the outbox column, then the
context is built by ``build_context`` and rendered by the real ``Renderer`` (sandboxed Jinja2,
StrictUndefined, CSS inlining). The recipient's first name carries markup, to prove it is
escaped in HTML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jinja2 import meta, nodes
from sqlalchemy import Connection, create_engine

from ciclovita.campaigns.catalog import Catalog, LoadedCampaign, campaign_files, load_catalog
from ciclovita.campaigns.spec import LOCALES, localized
from ciclovita.links import LinkBuilder
from ciclovita.planning.planner import message_uid
from ciclovita.planning.triggers import trigger_query
from ciclovita.rendering.context import Brand, Recipient, build_context, context_variables
from ciclovita.rendering.environment import make_environment
from ciclovita.rendering.render import RenderedEmail, Renderer, template_files
from ciclovita.vocabulary import DEFAULT_TIMEZONE

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ROOT / "campaigns"
TEMPLATES = ROOT / "templates"
CAMPAIGN_NAMES = [path.stem for path in campaign_files(CAMPAIGNS)]

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TRIGGER_AT = AS_OF - timedelta(days=7)
CUSTOMER_ID = 42
FIRST_NAME = '<b>Giulia</b> & "Co"'
ESCAPED_NAME = "&lt;b&gt;Giulia&lt;/b&gt;"
CODE_SUFFIX = "K7QM2XPA"
BASE_URL = "http://127.0.0.1:8000"
EXPIRY_IN_WORDS = {"it": "23 dicembre 2026", "en": "23 December 2026"}  # AS_OF + 30 days
EXPECTED = {
    "thank_you",
    "onboarding",
    "survey",
    "loyalty_reward",
    "referral_request",
    "win_back",
    "nurture",
}
HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>")
EURO_AMOUNT_IT = re.compile(r"\d{1,3}(?:\.\d{3})*,\d{2}\xa0€")
LINKS = LinkBuilder(BASE_URL, "secret")
BRAND = Brand("Ciclovita", "ciao@ciclovita.example")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CAMPAIGNS)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


@pytest.fixture(scope="module")
def connection() -> Iterator[Connection]:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        yield conn
    engine.dispose()


def planner_row(locale: str) -> SimpleNamespace:
    """A row as the planner's trigger query returns it, with every column a builder reads."""
    return SimpleNamespace(
        customer_id=CUSTOMER_ID,
        email="giulia@example.com",
        locale=locale,
        timezone=DEFAULT_TIMEZONE,
        current_stage="active",
        occurrence_key="test:1",
        trigger_at=TRIGGER_AT,
        order_ref="ORD-1042",
        amount_cents=123456,
        currency="EUR",
        previous_stage="active",
        score=9,
        code="AMICO-ABCDEFGH",
        properties={"page": "/guide"},
    )


def planned_details(
    campaign: LoadedCampaign, connection: Connection, locale: str
) -> dict[str, Any]:
    """The details dict the planner stores on the outbox row for this campaign."""
    found = trigger_query(campaign.spec.trigger, AS_OF, DEFAULT_TIMEZONE)
    details: dict[str, Any] = found.details(planner_row(locale)) if found else {}  # type: ignore[arg-type]
    offer = campaign.spec.offer
    if offer is not None:  # as plan_campaign does
        expires = AS_OF + timedelta(days=offer.valid_days) if offer.valid_days else None
        key = "offer" if offer.type == "coupon" else "referral"
        details[key] = {
            "code": f"{offer.prefix}-{CODE_SUFFIX}",
            "description": localized(
                offer.description, locale, campaign.spec.content.fallback_locale
            ),
            "expires_at": expires.isoformat() if expires else None,
        }
    loaded: dict[str, Any] = json.loads(json.dumps(details))  # the outbox column is JSON
    return loaded


def recipient(locale: str) -> Recipient:
    return Recipient(
        customer_id=CUSTOMER_ID,
        external_id="C-0042",
        email="giulia@example.com",
        first_name=FIRST_NAME,
        last_name="Rossi",
        locale=locale,
        timezone=DEFAULT_TIMEZONE,
        country="IT",
        stage="loyal",
        rfm_segment="Champions",
        order_count=4,
        monetary_cents=123456,
        predicted_clv_cents=45600,
        nps=9,
    )


def render(
    catalog: Catalog,
    renderer: Renderer,
    connection: Connection,
    name: str,
    variant: str,
    locale: str,
) -> tuple[RenderedEmail, dict[str, Any]]:
    campaign = catalog.campaign(name)
    uid = message_uid(name, CUSTOMER_ID, f"test:{variant}")
    context = build_context(
        recipient=recipient(locale),
        campaign_name=name,
        campaign=campaign.spec,
        message_uid=uid,
        variant=variant,
        locale=locale,
        details=planned_details(campaign, connection, locale),
        links=LINKS,
        brand=BRAND,
        unsubscribe_topic=catalog.policy.unsubscribe_topic,
    )
    return renderer.render(name, campaign.spec, variant, locale, context), context


def template_folders(campaign: LoadedCampaign) -> list[str]:
    spec = campaign.spec
    return sorted({spec.content.template, *(v.template for v in spec.variants if v.template)})


def cases() -> list[tuple[str, str, str]]:
    catalog = load_catalog(CAMPAIGNS)
    return [
        (campaign.name, variant, locale)
        for campaign in catalog.campaigns
        for variant in campaign.spec.variant_names
        for locale in LOCALES
    ]


def test_the_lifecycle_set_is_complete(catalog: Catalog) -> None:
    assert {c.name for c in catalog.campaigns} >= EXPECTED
    assert catalog.campaign("survey").spec.survey
    assert catalog.campaign("survey").spec.required_consent == "surveys"
    referral = catalog.campaign("referral_request").spec.offer
    assert referral is not None and referral.type == "referral_code"
    win_back = catalog.campaign("win_back").spec
    assert win_back.offer is not None and win_back.offer.type == "coupon"
    assert [v.weight for v in win_back.variants] == [50, 50]
    assert win_back.guards.holdout == pytest.approx(0.1)
    assert catalog.campaign("loyalty_reward").spec.offer is None  # no discount for loyal buyers
    nurture = catalog.campaign("nurture").spec
    assert nurture.guards.send_window is not None
    assert nurture.priority == min(c.spec.priority for c in catalog.campaigns)


@pytest.mark.parametrize("name", CAMPAIGN_NAMES)
def test_every_campaign_has_it_and_en_html_and_text(catalog: Catalog, name: str) -> None:
    campaign = catalog.campaign(name)
    assert {"it", "en"} <= set(campaign.spec.content.locales)
    assert campaign.spec.content.fallback_locale == "en"
    for folder in template_folders(campaign):
        for locale in ("it", "en"):
            for file in template_files(folder, locale):
                assert (TEMPLATES / file).is_file(), f"{name}: missing templates/{file}"


@pytest.mark.parametrize("name", CAMPAIGN_NAMES)
def test_templates_use_only_variables_the_trigger_provides(catalog: Catalog, name: str) -> None:
    campaign = catalog.campaign(name)
    env = make_environment(TEMPLATES)
    allowed = context_variables(campaign.spec)
    for folder in template_folders(campaign):
        for locale in ("it", "en"):
            for file in template_files(folder, locale):
                tree = env.parse((TEMPLATES / file).read_text(encoding="utf-8"))
                imported = {
                    name if isinstance(name, str) else name[1]
                    for node in tree.find_all(nodes.FromImport)
                    for name in node.names
                }
                used = meta.find_undeclared_variables(tree) - imported
                assert used <= allowed, f"{file} uses {sorted(used - allowed)}"


def test_no_template_marks_anything_safe() -> None:
    unsafe = re.compile(r"\|\s*safe\b|autoescape\s+false|Markup")
    for path in sorted(TEMPLATES.rglob("*.*")):
        text = path.read_text(encoding="utf-8")
        assert not unsafe.search(text), f"{path.relative_to(ROOT)} disables escaping"


@pytest.mark.parametrize(("name", "variant", "locale"), cases())
def test_campaign_renders(
    catalog: Catalog,
    renderer: Renderer,
    connection: Connection,
    name: str,
    variant: str,
    locale: str,
) -> None:
    email, context = render(catalog, renderer, connection, name, variant, locale)
    spec = catalog.campaign(name).spec
    html = email.html.replace("&nbsp;", "\xa0")
    text = email.text

    # subject: one non-empty line, personalised, not half-rendered
    assert email.subject.strip()
    assert "\n" not in email.subject and "\r" not in email.subject
    assert "Giulia" in email.subject
    for part in (email.subject, html, text):
        assert "{{" not in part and "{%" not in part

    # customer data is escaped in HTML, styles are inlined
    assert "<b>Giulia" not in html
    assert ESCAPED_NAME in html
    assert 'style="' in html
    assert re.search(r'<(p|td|div|a|h1)\b[^>]*\bstyle="', html)
    if spec.kind == "marketing":
        assert f'href="{context["links"]["unsubscribe"]}"' in html
        assert context["links"]["unsubscribe"] in text

    # the text part is plain text (the name is the customer's own data, shown as typed)
    assert FIRST_NAME in text
    leftover = HTML_TAG.search(text.replace(FIRST_NAME, ""))
    assert leftover is None, f"HTML tag in the text part: {leftover.group(0)}"

    # money in the customer's locale
    if locale == "it":
        for part in (html, text):
            for euro in re.finditer(r"[\d.,\s\xa0]*€", part):
                assert EURO_AMOUNT_IT.fullmatch(euro.group(0).strip(" ")), euro.group(0)
    if name == "thank_you":
        amount = "1.234,56\xa0€" if locale == "it" else "€1,234.56"
        assert amount in html and amount in text

    if spec.survey:
        urls = [item["url"] for item in context["survey"]]
        assert [item["score"] for item in context["survey"]] == list(range(11))
        found = re.findall(rf'href="({re.escape(BASE_URL)}/survey/[^"]+)"', html)
        assert found == urls
        assert all(url in text for url in urls)
        labels = (
            ("per niente probabile", "estremamente probabile")
            if locale == "it"
            else ("not at all likely", "extremely likely")
        )
        for label in labels:
            assert label in html and label in text

    if "referral" in context:
        code, url = context["referral"]["code"], context["referral"]["url"]
        assert code == f"AMICO-{CODE_SUFFIX}"
        assert url == f"{BASE_URL}/r/{code}"
        for part in (html, text):
            assert code in part and url in part
            assert context["referral"]["description"] in part

    if "offer" in context:
        offer = context["offer"]
        for part in (html, text):
            assert offer["code"] in part
            assert offer["description"] in part
            assert EXPIRY_IN_WORDS[locale] in part
        assert EXPIRY_IN_WORDS[locale] in html


def test_win_back_variants_differ(
    catalog: Catalog, renderer: Renderer, connection: Connection
) -> None:
    for locale in LOCALES:
        letter, _ = render(catalog, renderer, connection, "win_back", "letter", locale)
        short, _ = render(catalog, renderer, connection, "win_back", "short", locale)
        assert letter.subject != short.subject
        assert letter.text != short.text
