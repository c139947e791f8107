"""``python -m ciclovita_testing.fake_sendgrid --port 0 --port-file F``: the fake as a process."""

from ciclovita_testing.fake_sendgrid.server import main

main()
