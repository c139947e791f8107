"""The web side of ciclovita (``ciclovita serve-web``): SendGrid's event webhook, unsubscribe
and preference pages, survey answers and referral landings. See ``ciclovita.web.app``."""

from ciclovita.delivery.event_effects import IngestReport, ingest_events
from ciclovita.referrals import ConversionReport, convert_referrals
from ciclovita.web.app import create_app

__all__ = ["ConversionReport", "IngestReport", "convert_referrals", "create_app", "ingest_events"]
