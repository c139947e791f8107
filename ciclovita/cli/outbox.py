"""``ciclovita outbox``: what the outbox holds, and the operator's way out for held sends.

A message whose send was interrupted between the provider call and its record is
``ambiguous``: ciclovita never re-sends it blindly. SendGrid's events settle most of them
(the webhook, then ``reconcile``); for the rest an operator checks SendGrid's Email Activity
and releases the ones SendGrid never received, which become due again.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select

from ciclovita.cli.app import app, console, handles_errors, parse_as_of, runtime
from ciclovita.db.models import Message
from ciclovita.delivery.outbox import release_ambiguous
from ciclovita.vocabulary import MessageStatus

outbox_app = typer.Typer(help="The outbox: message counts and held sends.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("status")
@handles_errors
def status(
    limit: Annotated[int, typer.Option(min=0, help="Ambiguous messages listed at most.")] = 50,
) -> None:
    """Messages per campaign and status, and the ambiguous ones (held, never re-sent)."""
    rt = runtime()
    with rt.engine.connect() as connection:
        counts = connection.execute(
            select(Message.campaign, Message.status, func.count())
            .group_by(Message.campaign, Message.status)
            .order_by(Message.campaign, Message.status)
        ).all()
        held = connection.execute(
            select(
                Message.uid, Message.campaign, Message.to_email, Message.sending_at, Message.error
            )
            .where(Message.status == MessageStatus.AMBIGUOUS)
            .order_by(Message.sending_at, Message.id)
            .limit(limit)
        ).all()
        held_total = connection.execute(
            select(func.count()).where(Message.status == MessageStatus.AMBIGUOUS)
        ).scalar_one()
    table = Table(title="Outbox")
    for column in ("campaign", "status", "messages"):
        table.add_column(column, justify="right" if column == "messages" else "left")
    for campaign, state, n in counts:
        table.add_row(campaign, state, str(n))
    console.print(table)
    if not held_total:
        console.print("no ambiguous messages")
        return
    listing = Table(
        title=f"Ambiguous messages ({held_total}): held until SendGrid's events settle them"
    )
    for column in ("message", "campaign", "to", "sending since", "why"):
        listing.add_column(column)
    for uid, campaign, to_email, sending_at, error in held:
        since = f"{sending_at:%Y-%m-%d %H:%M}" if sending_at else "-"
        listing.add_row(uid, campaign, to_email or "-", since, error or "-")
    console.print(listing)
    if held_total > len(held):
        console.print(f"… and {held_total - len(held)} more (--limit)")
    console.print(
        "Check each in SendGrid's Email Activity (search the custom arg ciclovita_message_id); "
        "release those SendGrid never received with `ciclovita outbox release UID...`."
    )


@outbox_app.command("release")
@handles_errors
def release(
    uids: Annotated[list[str], typer.Argument(help="Ambiguous message ids to send again.")],
    as_of: Annotated[
        str | None, typer.Option(help="Due again at this ISO date-time (UTC; default now).")
    ] = None,
) -> None:
    """Make ambiguous messages due again, after checking SendGrid never received them.

    Messages SendGrid reported on (a stored webhook event) are never released."""
    rt = runtime()
    with rt.engine.begin() as connection:
        released = release_ambiguous(connection, uids, parse_as_of(as_of))
    for uid in released:
        console.print(f"released {uid}: due again, the next run sends it")
    for uid in sorted(set(uids) - set(released)):
        console.print(
            f"[yellow]not released {uid}[/]: not ambiguous, unknown, or SendGrid reported on it"
        )
    if len(released) < len(set(uids)):
        raise typer.Exit(1)
