"""Test doubles shared by ``tests/`` and ``benchmarks/``; not part of the product.

Nothing in ``ciclovita``, ``tasks`` or ``flows`` imports this package. It lives at the top
level, beside them, so that the benchmarks use the same doubles as the tests without
importing from ``tests/``:

* :mod:`ciclovita_testing.fake_sendgrid`: a fake SendGrid mail/send API over real HTTP
  (Starlette served by uvicorn, in a thread or in its own process) that records what it
  accepted and answers with scripted faults;
* :mod:`ciclovita_testing.exactly_once`: the "each message accepted exactly once" checks
  that the fake and the tests' recording sender share.
"""
