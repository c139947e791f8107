"""Delivery: the outbox and everything that moves a message through it, exactly once.

``outbox`` (the state machine), ``dispatch`` (deliver, render_due, reconcile) over
``render_pool`` (rendering claimed rows, here or in worker processes) and ``pipeline`` (the
send loop), ``reports``, ``senders/`` and ``mime``; and what the provider says back:
``provider_events`` (parse and check SendGrid's event batches), ``event_rules`` (what each
event means) and ``event_effects`` (apply a batch to messages and suppressions)."""
