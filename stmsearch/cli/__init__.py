"""The ``stmsearch`` command line: the top layer, which calls into every other one.

Each subcommand lives in a module of this package and loads when used, so ``stmsearch
--help`` does not import ray or plotly."""
from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command
COMMANDS = {
    "train-proxy": "stmsearch.cli.train:train_proxy_cmd",
    "eval": "stmsearch.cli.evaluate:eval_cmd",
    "profile": "stmsearch.cli.evaluate:profile_cmd",
    "search": "stmsearch.cli.search:search_cmd",
    "dashboard": "stmsearch.cli.dashboard:dashboard_cmd",
    "export": "stmsearch.cli.export:export_cmd",
    "verify": "stmsearch.cli.verify:verify_cmd",
    "calibrate": "stmsearch.cli.calibrate:calibrate_cmd",
    "fit-probe": "stmsearch.cli.probe:fit_probe_cmd",
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


