"""The ``stmsearch`` command line. Subcommands live beside what they run and load lazily,
so ``stmsearch --help`` does not import ray or plotly."""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command
COMMANDS = {
    "train-proxy": "stmsearch.training:train_proxy_cmd",
    "eval": "stmsearch.evaluation.commands:eval_cmd",
    "profile": "stmsearch.evaluation.commands:profile_cmd",
    "search": "stmsearch.search.commands:search_cmd",
    "dashboard": "stmsearch.dashboard.commands:dashboard_cmd",
    "export": "stmsearch.export:export_cmd",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stmsearch")
def main() -> None:
    """Find token-merging schedules for Vision Mamba models."""


if __name__ == "__main__":
    main()
