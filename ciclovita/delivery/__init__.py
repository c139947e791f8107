"""Delivery: the outbox (claim, send, record), MIME building and the senders."""
