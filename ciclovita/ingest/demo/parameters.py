"""Every number and word the demo data is made from: shares, rates, pools and labels.

Nothing here draws or writes; the modules that make each concern (``people``, ``purchases``,
``engagement``) read these, so tuning the demo means editing this file only. Tuples whose
position is stored as a code (``CHANNELS``, ``ORDER_STATUSES``, ``EVENT_TYPES``, …) must keep
their order: changing it changes the data a seed gives.
"""

from __future__ import annotations

from typing import Final

from ciclovita.vocabulary import ConsentTopic, Locale, OrderStatus

PILOT_CUSTOMERS: Final = 50_000
NAME_POOL_SIZE: Final = 3_000
CURRENCY: Final = "EUR"
RECENT_DAYS: Final = 3.0  # a demo always has a completed order this recent
CALIBRATION_STEPS: Final = 40
CALIBRATION_TOLERANCE: Final = 0.003

# --- who the customers are -------------------------------------------------------------------

ITALIAN_SHARE: Final = 0.60
# English-speaking countries: (country, share among English customers, Faker locale,
# time zones, their weights).
ENGLISH_COUNTRIES: Final = (
    ("GB", 0.45, "en_GB", ("Europe/London",), (1.0,)),
    ("IE", 0.12, "en_GB", ("Europe/Dublin",), (1.0,)),
    (
        "US",
        0.30,
        "en_US",
        ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"),
        (0.45, 0.25, 0.08, 0.22),
    ),
    ("CA", 0.06, "en_US", ("America/Toronto", "America/Vancouver"), (0.6, 0.4)),
    ("AU", 0.07, "en_GB", ("Australia/Sydney", "Australia/Melbourne"), (0.6, 0.4)),
)
FAKER_LOCALES: Final = ("it_IT", "en_GB", "en_US")
# Address patterns: giulia.rossi.123@, giuliarossi123@, g.rossi123@ (123: a number unique to
# the customer).
EMAIL_PATTERN_WEIGHTS: Final = (0.6, 0.25, 0.15)
EMAIL_DOMAINS: Final = ("example.com", "example.org", "example.net")
EMAIL_DOMAIN_WEIGHTS: Final = (0.5, 0.25, 0.25)
NO_EMAIL_SHARE: Final = 0.03
BIRTH_DATE_SHARE: Final = 0.70

# Acquisition channels a customer can arrive from by itself ("referral" is given to the
# customers a converted referral code brought in). Per channel: share, mean acquisition cost
# in cents (0 = free), chance to ever buy, chance that the account was created at checkout
# (first order at signup), multiplier on the dropout probability.
CHANNELS: Final = (
    ("organic_search", 0.27, 0, 0.72, 0.45, 1.0),
    ("paid_search", 0.18, 2_800, 0.75, 0.55, 1.1),
    ("social_ads", 0.20, 1_900, 0.62, 0.45, 1.2),
    ("marketplace", 0.09, 1_100, 0.92, 0.80, 1.3),
    ("direct", 0.14, 0, 0.78, 0.50, 0.8),
    ("newsletter", 0.12, 250, 0.45, 0.25, 0.9),
)
REFERRAL_CHANNEL: Final = "referral"
CHANNEL_NAMES: Final = (REFERRAL_CHANNEL, *(c[0] for c in CHANNELS))  # by channel index + 1
REFERRAL_REWARD_CENTS: Final = 1_000

CATEGORIES: Final = ("apparel", "shoes", "home", "beauty", "sport", "books", "electronics")
NEWSLETTER_FREQUENCIES: Final = ("weekly", "monthly", "never")
NEWSLETTER_FREQUENCY_WEIGHTS: Final = (0.35, 0.50, 0.15)

# --- how they buy ----------------------------------------------------------------------------

SIGNUP_GROWTH: Final = 1.2  # signups per day grow by e^1.2 ≈ 3.3× over the history
FIRST_ORDER_DELAY_DAYS: Final = 30.0  # mean wait before the first order (not at checkout)
RATE_SHAPE: Final = 0.9  # Gamma shape of purchase rates (heterogeneity)
RATE_MEAN_PER_DAY: Final = 1 / 35  # mean purchase rate while alive
MAX_RATE_PER_DAY: Final = 0.5  # nobody buys more than every other day on average
DROPOUT_BETA: Final = (1.5, 2.8)  # Beta(a, b) of the dropout probability after a purchase
SPEND_MEAN_CENTS: Final = {Locale.IT: 6_800, Locale.EN: 7_600}  # mean order value by locale
SPEND_CUSTOMER_SIGMA: Final = 0.55  # spread of customers' own mean order value (log scale)
SPEND_ORDER_SIGMA: Final = 0.35  # spread of one customer's orders around their mean
MIN_ORDER_CENTS: Final = 490
CANCELLED_SHARE: Final = 0.015
REFUNDED_SHARE: Final = 0.015
ORDER_STATUSES: Final = (OrderStatus.COMPLETED, OrderStatus.CANCELLED, OrderStatus.REFUNDED)

# Relative activity by calendar month (Jan..Dec) and by hour of the day (UTC).
MONTH_ACTIVITY: Final = (0.95, 0.85, 0.95, 1.0, 1.0, 0.95, 0.9, 0.6, 1.0, 1.05, 1.45, 1.6)
HOUR_ACTIVITY: Final = (
    0.35, 0.2, 0.15, 0.15, 0.2, 0.35, 0.6, 0.85, 1.0, 1.1, 1.15, 1.2,
    1.25, 1.2, 1.15, 1.15, 1.2, 1.3, 1.5, 1.7, 1.7, 1.45, 1.0, 0.6,
)  # fmt: skip

# --- what else they do ------------------------------------------------------------------------

VISITS_PER_CUSTOMER: Final = 1.4
DOWNLOADS_PER_CUSTOMER: Final = 0.25
CLICKS_PER_SUBSCRIBER: Final = 0.6
REVIEW_SHARE: Final = 0.25  # of buyers
TICKET_SHARE: Final = 0.12  # of buyers
RECENT_VISIT_SHARE: Final = 0.08  # of prospects: a site visit in the last two weeks
PROSPECT_INTEREST_DAYS: Final = 150.0  # mean time a prospect keeps looking around
DROPPED_ACTIVITY_DAYS: Final = 120.0  # a customer who stopped buying fades out after this
PRODUCTS: Final = 400
PAGES: Final = ("/", "/cart", "/blog", "/offers")
DEVICES: Final = ("mobile", "desktop", "tablet")
DEVICE_WEIGHTS: Final = (0.62, 0.32, 0.06)
ASSETS: Final = (
    "size-guide.pdf",
    "care-guide.pdf",
    "catalogue-spring.pdf",
    "catalogue-autumn.pdf",
    "gift-guide.pdf",
)
NEWSLETTER_LINKS: Final = ("hero", "product", "offer", "blog")
TICKET_TOPICS: Final = ("shipping", "returns", "payment", "product", "account")
TICKET_CHANNELS: Final = ("email", "chat", "phone")

# consent topic -> (share granted, share refused); the rest never answered
CONSENT_SHARES: Final = {ConsentTopic.MARKETING: (0.75, 0.10), ConsentTopic.SURVEYS: (0.60, 0.12)}
IMPORTED_SHARE_OF_HISTORY: Final = 0.15  # the oldest customers came from an imported list

NPS_BASE_SHARE: Final = 0.11  # of buyers answer the NPS survey...
NPS_REPEAT_BONUS: Final = 0.12  # ...more of the repeat buyers (3+ orders)
NPS_COMMENT_SHARE: Final = 0.3
NPS_CENTRE: Final = 7.6  # the score of an average buyer
NPS_COMMENTS: Final = {
    Locale.IT: {
        "promoter": (
            "Servizio eccellente, consegna velocissima.",
            "Prodotti di ottima qualità, tornerò sicuramente!",
            "Vi consiglio sempre ai miei amici.",
        ),
        "passive": ("Tutto bene, prezzi un po' alti.", "Buona esperienza nel complesso."),
        "detractor": ("Consegna in ritardo.", "L'assistenza ha risposto dopo giorni."),
    },
    Locale.EN: {
        "promoter": (
            "Excellent service, super fast delivery.",
            "Great quality, I'll definitely be back!",
            "I always recommend you to my friends.",
        ),
        "passive": ("All fine, a bit pricey.", "Good experience overall."),
        "detractor": ("Delivery was late.", "Support took days to answer."),
    },
}

REFERRER_MIN_ORDERS: Final = 3
REFERRER_SHARE: Final = 0.40  # of customers with 3+ completed orders get a referral code
REFERRAL_CONVERSION: Final = 0.35  # of codes bring in a friend who buys
REFERRAL_CODE_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
REFERRAL_CODE_LENGTH: Final = 6
REFERRAL_CAMPAIGN: Final = "referral_request"

EVENT_TYPES: Final = (
    "signup",
    "site_visit",
    "content_download",
    "newsletter_click",
    "review",
    "support_ticket",
    "referral_visit",
)
CONSENT_SOURCES: Final = ("signup_form", "checkout", "import", "preference_center")
