"""Who may be written to at all: an address, not suppressed, with the consent a message needs.

Checked twice for every message, by the same rule: when it is planned (``planner``), and
again just before it is sent (``ciclovita.delivery.outbox.late_skips``), since a message can
wait hours for its send window and a customer may unsubscribe meanwhile. Both read the facts
with ``read_eligibility`` (one lookup per chunk of addresses, one per consent topic and chunk
of customers) and ask ``Eligibility.refusal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, select

from ciclovita.batching import IN_LIST_SIZE, chunks
from ciclovita.db.models import Consent, Suppression
from ciclovita.vocabulary import ConsentTopic, SkipReason


@dataclass(frozen=True)
class Eligibility:
    """The suppressed addresses and granted consents among the customers of a batch."""

    suppressed: frozenset[str]
    """Lower-cased addresses on the suppression list."""
    consented: Mapping[ConsentTopic, frozenset[int]]
    """Per topic, the customers who granted it."""

    def refusal(
        self, email: str | None, customer_id: int, topic: ConsentTopic | None
    ) -> SkipReason | None:
        """Why the customer must not get a message needing ``topic`` at ``email`` (None:
        they may): no address, a suppressed address, or the consent not granted."""
        if not email:
            return SkipReason.NO_EMAIL
        if email.lower() in self.suppressed:
            return SkipReason.SUPPRESSED
        if topic is not None and customer_id not in self.consented.get(topic, frozenset()):
            return SkipReason.NO_CONSENT
        return None


def read_eligibility(
    connection: Connection,
    emails: Iterable[str | None],
    customers_by_topic: Mapping[ConsentTopic, Iterable[int]],
) -> Eligibility:
    """The facts ``Eligibility.refusal`` needs about these addresses and, per consent topic,
    these customers."""
    return Eligibility(
        suppressed=_suppressed(connection, emails),
        consented={
            topic: _consented(connection, topic, customers)
            for topic, customers in customers_by_topic.items()
        },
    )


def _suppressed(connection: Connection, emails: Iterable[str | None]) -> frozenset[str]:
    found: set[str] = set()
    for part in chunks(sorted({email.lower() for email in emails if email}), IN_LIST_SIZE):
        found.update(
            connection.execute(
                select(Suppression.email).where(Suppression.email.in_(part))
            ).scalars()
        )
    return frozenset(found)


def _consented(
    connection: Connection, topic: ConsentTopic, customers: Iterable[int]
) -> frozenset[int]:
    found: set[int] = set()
    for part in chunks(sorted(set(customers)), IN_LIST_SIZE):
        found.update(
            connection.execute(
                select(Consent.customer_id).where(
                    Consent.topic == topic, Consent.granted.is_(True), Consent.customer_id.in_(part)
                )
            ).scalars()
        )
    return frozenset(found)
