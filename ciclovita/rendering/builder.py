"""From an outbox row to an email: render each message once, addressed and branded.

``MessageBuilder.build`` turns one row (anything with the outbox row's fields) and its
recipient into an ``OutgoingEmail``: context, templates, sender, headers. ``prepare_rows``
does it for a batch and turns what cannot be sent into data (``Prepared.error``, or the
late guard's ``Prepared.skip``), so one bad row never fails the others. Where the rows come
from (the outbox) and where the emails go (a sender) is delivery's business
(``ciclovita.delivery``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ciclovita.campaigns.catalog import Catalog, LoadedCampaign
from ciclovita.campaigns.spec import DEFAULT_VARIANT
from ciclovita.errors import PermanentDeliveryError, RenderError
from ciclovita.links import LinkBuilder
from ciclovita.rendering.context import Brand, Recipient, build_context
from ciclovita.rendering.outgoing import OutgoingEmail
from ciclovita.rendering.render import Renderer
from ciclovita.settings import Settings
from ciclovita.vocabulary import ConsentTopic, MessageKind, SkipReason

log = logging.getLogger(__name__)


class MessageRow(Protocol):
    """What rendering reads of an outbox row (``ciclovita.delivery.outbox.OutboxRow``)."""

    @property
    def uid(self) -> str: ...
    @property
    def campaign(self) -> str: ...
    @property
    def variant(self) -> str | None: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def to_email(self) -> str: ...
    @property
    def stage(self) -> str | None: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


class ClaimedRow(MessageRow, Protocol):
    """A row a delivery took: its outbox id and how often sending it was tried."""

    @property
    def id(self) -> int: ...
    @property
    def attempts(self) -> int: ...


@dataclass(frozen=True)
class Prepared:
    """A claimed row made ready to send: its email, or why it must not be sent."""

    id: int
    uid: str
    campaign: str
    attempts: int
    email: OutgoingEmail | None = None
    error: str | None = None
    skip: SkipReason | None = None


class MessageBuilder:
    """Turns outbox rows into rendered, addressed emails."""

    def __init__(self, catalog: Catalog, renderer: Renderer, settings: Settings) -> None:
        self.catalog = catalog
        self.renderer = renderer
        self.settings = settings
        self.links = LinkBuilder(settings.public_base_url, settings.secret_key.get_secret_value())
        self.campaigns = {c.name: c for c in catalog.campaigns}
        self.consent_topics: dict[str, ConsentTopic | None] = {
            c.name: c.spec.required_consent for c in catalog.campaigns
        }

    def brand(self, campaign: LoadedCampaign) -> Brand:
        sender = campaign.spec.content.sender or self.catalog.policy.sender
        website = self.catalog.policy.website
        if sender is not None:
            return Brand(sender.name or self.settings.from_name, str(sender.email), website=website)
        return Brand(self.settings.from_name, self.settings.from_email, website=website)

    def build(self, row: MessageRow, recipient: Recipient) -> OutgoingEmail:
        """The email of one outbox row for its recipient."""
        campaign = self.campaigns.get(row.campaign)
        if campaign is None:
            raise RenderError(
                row.campaign, "-", recipient.customer_id, "campaign no longer defined"
            )
        spec = campaign.spec
        brand = self.brand(campaign)
        topic = spec.required_consent or self.catalog.policy.unsubscribe_topic
        variant = row.variant or DEFAULT_VARIANT
        locale = row.locale or spec.content.fallback_locale
        context = build_context(
            recipient=recipient,
            campaign_name=campaign.name,
            campaign=spec,
            message_uid=row.uid,
            variant=variant,
            locale=locale,
            details=dict(row.details or {}),
            links=self.links,
            brand=brand,
            unsubscribe_topic=topic,
        )
        rendered = self.renderer.render(campaign.name, spec, variant, locale, context)
        marketing = spec.kind == MessageKind.MARKETING
        headers: dict[str, str] = {}
        if marketing:
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
            variant=variant,
            headers=headers,
            asm_group_id=self.settings.sendgrid_asm_group_id if marketing else None,
        )

    def prepare_rows(
        self,
        batch: Sequence[tuple[ClaimedRow, Recipient]],
        skips: Mapping[int, SkipReason],
        request: Callable[[OutgoingEmail], OutgoingEmail] | None = None,
    ) -> list[Prepared]:
        """Render each row once (and build its provider request with ``request``, a
        sender's ``prepare``, when given); a row that cannot be rendered or sent is a
        permanent failure of that row alone (logged with its cause), never of the batch."""
        prepared = []
        for row, recipient in batch:
            email: OutgoingEmail | None = None
            error: str | None = None
            skip = skips.get(row.id)
            if skip is None:
                try:
                    email = self.build(row, recipient)
                    if request is not None:
                        email = request(email)
                except RenderError as exc:
                    log.error("render failed: %s", exc)
                    error = str(exc)
                except PermanentDeliveryError as exc:
                    email, error = None, f"not sent: {exc.detail}"
                except Exception as exc:  # one bad row must not stop the others
                    log.exception("message %s could not be built", row.uid)
                    email = None
                    error = f"could not build message: {exc.__class__.__name__}: {exc}"
            prepared.append(
                Prepared(row.id, row.uid, row.campaign, row.attempts, email, error, skip)
            )
        return prepared
