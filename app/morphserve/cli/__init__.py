"""The `morphserve` command line (typer + rich): `morphserve.cli:main` is the console entry point.

One module per command group (serve, models, history, watch, durability, bundles, edit, rollout, dataset, fit),
each with a `register(app)` that root.py calls; the plumbing they share is in common.py and describe.py, leaves that
import no command. Importing this package imports neither torch nor the server: commands import what they need when
they run.
"""

from morphserve.cli.root import cli, main

__all__ = ["cli", "main"]
