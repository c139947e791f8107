"""Delivering due messages: claim a batch, render each once, send, record — exactly once.

Each batch is claimed in its own transaction; messages are then sent in small groups: the
group is committed as ``sending``, handed to the sender, and its outcomes are committed. A
crash therefore leaves at most one group ambiguous, and nothing else in doubt.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from ciclovita.campaigns.catalog import Catalog, LoadedCampaign
from ciclovita.delivery import outbox
from ciclovita.delivery.message import OutgoingEmail
from ciclovita.delivery.senders.base import Sender
from ciclovita.errors import RenderError
from ciclovita.links import LinkBuilder
from ciclovita.rendering.context import Brand, Recipient, build_context
from ciclovita.rendering.render import Renderer
from ciclovita.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    ambiguous: int = 0
    rendered: int = 0
    cap_reached: bool = False
    by_campaign: dict[str, Counter[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, campaign: str, status: str, n: int = 1) -> None:
        self.by_campaign.setdefault(campaign, Counter())[status] += n

    def merge(self, other: DeliveryReport) -> None:
        for name in ("claimed", "sent", "failed", "retried", "ambiguous", "rendered"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cap_reached = self.cap_reached or other.cap_reached
        for campaign, counts in other.by_campaign.items():
            self.by_campaign.setdefault(campaign, Counter()).update(counts)
        self.errors.extend(other.errors)
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "ambiguous": self.ambiguous,
            "rendered": self.rendered,
            "cap_reached": self.cap_reached,
            "by_campaign": {k: dict(v) for k, v in self.by_campaign.items()},
            "errors": self.errors[:20],
        }


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{time.monotonic_ns() % 10**9}"


class MessageBuilder:
    """Turns outbox rows into rendered, addressed emails."""

    def __init__(self, catalog: Catalog, renderer: Renderer, settings: Settings) -> None:
        self.catalog = catalog
        self.renderer = renderer
        self.settings = settings
        self.links = LinkBuilder(settings.public_base_url, settings.secret_key.get_secret_value())
        self.campaigns = {c.name: c for c in catalog.campaigns}

    def brand(self, campaign: LoadedCampaign) -> Brand:
        sender = campaign.spec.content.sender or self.catalog.policy.sender
        website = self.catalog.policy.website
        if sender is not None:
            return Brand(sender.name or self.settings.from_name, str(sender.email), website=website)
        return Brand(self.settings.from_name, self.settings.from_email, website=website)

    def build(self, row: Any, recipient: Recipient) -> OutgoingEmail:
        campaign = self.campaigns.get(row.campaign)
        if campaign is None:
            raise RenderError(
                row.campaign, "-", recipient.customer_id, "campaign no longer defined"
            )
        spec = campaign.spec
        brand = self.brand(campaign)
        topic = spec.required_consent or self.catalog.policy.unsubscribe_topic
        context = build_context(
            recipient=recipient,
            campaign_name=campaign.name,
            campaign=spec,
            message_uid=row.uid,
            variant=row.variant or "default",
            locale=row.locale or spec.content.fallback_locale,
            details=dict(row.details or {}),
            links=self.links,
            brand=brand,
            unsubscribe_topic=topic,
        )
        rendered = self.renderer.render(
            campaign.name,
            spec,
            row.variant or "default",
            row.locale or spec.content.fallback_locale,
            context,
        )
        headers: dict[str, str] = {}
        if spec.kind == "marketing":
            headers["List-Unsubscribe"] = f"<{context['links']['unsubscribe']}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return OutgoingEmail(
            uid=row.uid,
            campaign=campaign.name,
            kind=spec.kind,
            to_email=row.to_email,
            to_name=recipient.display_name,
            from_email=brand.email,
            from_name=brand.name,
            reply_to=str(spec.content.reply_to) if spec.content.reply_to else None,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            stage=row.stage,
            headers=headers,
            asm_group_id=self.settings.sendgrid_asm_group_id if spec.kind == "marketing" else None,
        )


def deliver(
    engine: Engine,
    builder: MessageBuilder,
    sender: Sender,
    *,
    as_of: datetime | None = None,
    batch_size: int = 500,
    group_size: int = 64,
    max_messages: int | None = None,
    campaigns: Sequence[str] | None = None,
    worker: str | None = None,
    single_batch: bool = False,
) -> DeliveryReport:
    """Send due messages until none is left, ``max_messages`` is reached, or one batch
    (``single_batch``)."""
    started = time.perf_counter()
    worker = worker or worker_name()
    report = DeliveryReport()
    budget = max_messages if max_messages is not None else None
    while budget is None or budget > 0:
        now = as_of or datetime.now(UTC)
        limit = batch_size if budget is None else min(batch_size, budget)
        with engine.begin() as connection:
            ids = outbox.claim(connection, worker, limit, now, campaigns)
        if not ids:
            break
        report.claimed += len(ids)
        if budget is not None:
            budget -= len(ids)
        _deliver_claimed(engine, builder, sender, ids, worker, report, as_of, group_size)
        if single_batch:
            break
    if budget is not None and budget <= 0:
        with engine.connect() as connection:
            if outbox.count_due(connection, as_of or datetime.now(UTC), campaigns):
                report.cap_reached = True
    report.seconds = time.perf_counter() - started
    return report


def _deliver_claimed(
    engine: Engine,
    builder: MessageBuilder,
    sender: Sender,
    ids: Sequence[int],
    worker: str,
    report: DeliveryReport,
    as_of: datetime | None,
    group_size: int,
) -> None:
    with engine.connect() as connection:
        batch = outbox.load_batch(connection, ids)
    emails: list[tuple[int, OutgoingEmail]] = []
    failures: dict[int, str] = {}
    for row, recipient in batch:
        try:
            emails.append((row.id, builder.build(row, recipient)))
        except RenderError as exc:
            failures[row.id] = str(exc)
            report.failed += 1
            report.count(row.campaign, "failed")
            report.errors.append(str(exc))
            log.error("render failed: %s", exc)
    report.rendered += len(emails)
    if failures:
        with engine.begin() as connection:
            outbox.mark_failed(connection, failures, as_of or datetime.now(UTC))
    for start in range(0, len(emails), group_size):
        group = emails[start : start + group_size]
        with engine.begin() as connection:
            marked = set(
                outbox.mark_sending(
                    connection, [i for i, _ in group], worker, as_of or datetime.now(UTC)
                )
            )
        group = [(i, e) for i, e in group if i in marked]
        if not group:
            continue
        outcomes = sender.send_batch([e for _, e in group])
        ids_by_uid = {e.uid: i for i, e in group}
        with engine.begin() as connection:
            outbox.record_outcomes(
                connection, outcomes, ids_by_uid, sender.name, as_of or datetime.now(UTC)
            )
        campaigns = {e.uid: e.campaign for _, e in group}
        for outcome in outcomes:
            status = {
                "sent": "sent",
                "failed": "failed",
                "retry": "retried",
                "ambiguous": "ambiguous",
            }[outcome.status]
            setattr(report, status, getattr(report, status) + 1)
            report.count(campaigns[outcome.uid], status)
            if outcome.error and outcome.status != "sent":
                report.errors.append(f"{campaigns[outcome.uid]} {outcome.uid}: {outcome.error}")


def reconcile(engine: Engine, sender: Sender, now: datetime | None = None) -> dict[str, int]:
    """Move stale ``sending`` rows to ambiguous, then resolve those the sender can confirm."""
    now = now or datetime.now(UTC)
    with engine.begin() as connection:
        newly = outbox.mark_stale_sending_ambiguous(connection, now)
        pending = outbox.ambiguous_uids(connection)
    found = sender.reconcile(list(pending)) if pending else {}
    with engine.begin() as connection:
        resolved = outbox.resolve_ambiguous(connection, found, pending, sender.name, now)
    return {"newly_ambiguous": newly, "resolved": resolved, "ambiguous": len(pending) - resolved}
