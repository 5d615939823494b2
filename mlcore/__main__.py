"""`python -m mlcore` runs the dataslayer command."""

from mlcore.cli import main

main()
