"""ciclovita: lifecycle marketing automation as code.

The domain core: settings, the customer database, value maths, segments, the campaign
language, rendering, senders, the CLI and the web app. It never imports Prefect; the flows
and tasks that orchestrate it live in ``flows/`` and ``tasks/``.
"""

__version__ = "0.1.0"
