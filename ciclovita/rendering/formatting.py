"""Locale-aware formatting of money and dates for templates (babel).

Money arrives as integer cents and is formatted exactly (Decimal), e.g. 123456 EUR in
Italian → ``1.234,56 €``, in English → ``€1,234.56``. Dates use the customer's locale and
time zone.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal

from ciclovita.vocabulary import SHOP_LOCALE, Locale

BABEL_LOCALES: dict[str, str] = {Locale.IT: "it_IT", Locale.EN: "en_GB"}
"""The babel locale of each of ours (their number and date conventions)."""


def babel_locale(locale: str) -> str:
    return BABEL_LOCALES.get(locale, locale)


def money(cents: int, currency: str = "EUR", locale: str = SHOP_LOCALE) -> str:
    """Integer cents as a currency amount in the locale's style."""
    amount = Decimal(int(cents)).scaleb(-2)
    return format_currency(amount, currency, locale=babel_locale(locale))


def number(value: float | int, locale: str = SHOP_LOCALE) -> str:
    return format_decimal(value, locale=babel_locale(locale))


def long_date(value: date | datetime, locale: str = SHOP_LOCALE, timezone: str = "UTC") -> str:
    """A date as words (``23 novembre 2026`` / ``23 November 2026``)."""
    if isinstance(value, datetime):
        value = value.astimezone(ZoneInfo(timezone)).date()
    return format_date(value, format="long", locale=babel_locale(locale))


def short_datetime(value: datetime, locale: str = SHOP_LOCALE, timezone: str = "UTC") -> str:
    return format_datetime(
        value.astimezone(ZoneInfo(timezone)), format="short", locale=babel_locale(locale)
    )
