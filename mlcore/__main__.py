"""`python -m mlcore`: the in-process dataslayer commands (the full command tree is `python -m worker`)."""

from mlcore.cli import main

main()
