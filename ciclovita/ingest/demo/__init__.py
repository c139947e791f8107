"""Demo data: a realistic, deterministic customer base to try ciclovita end to end.

``generate_demo_data`` writes customers, orders, engagement events, consents, NPS answers and
referrals that exercise every lifecycle stage, the RFM and CLV models and every campaign
(thank-you, onboarding, NPS survey, loyalty reward, referral request, win-back, nurture).
Everything is vectorised with numpy; the only loop is over purchase index.

One module per job, each depending only on those above it:

- ``parameters``: every share, rate, pool and label the data is made from;
- ``timeline``: the history window, its seasonal clock, one random stream per concern, and
  the vectorised ways of drawing from them;
- ``people``: customers (signups, locales and zones, names and addresses, channels) and
  their consents;
- ``purchases``: orders from a BG/NBD-like purchase process (``mean_orders`` calibrated on a
  pilot run), and referrals;
- ``engagement``: events (visits, downloads, clicks, reviews, tickets) and NPS answers;
- ``dataset``: the whole data set in memory, made in dependency order;
- ``writing``: existing demo rows, primary keys, frames and the bulk load (COPY on
  PostgreSQL, in one transaction);
- ``generate``: ``generate_demo_data`` itself.

The same ``(customers, seed, as_of, history_days, mean_orders)`` always writes the same rows.
"""

from ciclovita.ingest.demo.generate import generate_demo_data
from ciclovita.ingest.demo.writing import DEMO_PREFIX, DemoSummary

__all__ = ["DEMO_PREFIX", "DemoSummary", "generate_demo_data"]
