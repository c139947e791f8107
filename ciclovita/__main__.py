"""``python -m ciclovita``: the same as the ``ciclovita`` command."""

from ciclovita.cli import main

main()
