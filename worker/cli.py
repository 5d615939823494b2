"""The `dataslayer` command tree, composed in one place: mlcore's in-process commands plus the queue and stack ones.

`python -m mlcore` has only the in-process commands (train, predict, promote, models, bench, demo); the
console script `dataslayer` and `python -m worker` have them all.
"""

from __future__ import annotations

import click

from mlcore import cli as mlcore_cli
from worker.commands import queue, stack, users


def command_tree() -> click.Group:
    """Every dataslayer command under one group."""
    group = click.Group(
        "dataslayer",
        commands={**mlcore_cli.cli.commands},
        callback=mlcore_cli.cli.callback,
        params=list(mlcore_cli.cli.params),
        help="Fall detection for the Dataslayer competition: train, queue, track in MLflow, predict, submit.",
        context_settings=mlcore_cli.cli.context_settings,
    )
    for command in (*queue.COMMANDS, *stack.COMMANDS, *users.COMMANDS):
        group.add_command(command)
    return group


def main() -> None:
    """Console-script entry point: every dataslayer command."""
    command_tree()(prog_name="dataslayer")
