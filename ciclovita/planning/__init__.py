"""Planning: which trigger occurrences are due, and what becomes of each, written to the outbox.

``triggers`` finds the due occurrences of each kind of trigger; ``eligibility`` says who may
be written to at all (address, suppressions, consent); ``decision`` decides one occurrence's
fate from its facts; ``guards`` holds the deterministic assignments and send windows;
``planner`` puts them together, one campaign at a time."""
