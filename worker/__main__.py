"""`python -m worker` runs the full dataslayer command."""

from worker.cli import main

main()
