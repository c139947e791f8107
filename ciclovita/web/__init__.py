"""The web side of ciclovita (``ciclovita serve-web``): SendGrid's event webhook, unsubscribe
and preference pages, survey answers and referral landings. See ``ciclovita.web.app``."""

from ciclovita.referrals import ConversionReport, convert_referrals
from ciclovita.web.app import create_app
from ciclovita.web.webhook import IngestReport, ingest_events

__all__ = ["ConversionReport", "IngestReport", "convert_referrals", "create_app", "ingest_events"]
