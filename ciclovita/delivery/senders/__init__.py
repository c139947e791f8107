"""Senders: where rendered messages go. ``create_sender`` picks one from the settings."""

from ciclovita.delivery.senders.base import Sender, create_sender, register_sender, sender_names

__all__ = ["Sender", "create_sender", "register_sender", "sender_names"]
