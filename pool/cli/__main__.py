"""``python -m pool.cli``: the ``pool`` command."""

from pool.cli.commands import main

main()
