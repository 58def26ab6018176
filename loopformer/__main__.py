"""``python -m loopformer``: the ``loopformer`` command, where its script is not on PATH."""

from loopformer.cli.entry import main

main()
