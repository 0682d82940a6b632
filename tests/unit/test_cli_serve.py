"""`morphserve serve`'s options are generated from Settings: every setting is a flag, one serve command only."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from morphserve.cli import cli
from morphserve.settings import Settings


def _serve() -> Any:
    return typer.main.get_command(cli).commands["serve"]  # type: ignore[attr-defined]


def test_every_setting_is_a_flag_of_the_one_serve_command() -> None:
    serves = [c for c in cli.registered_commands if (c.name or c.callback.__name__) == "serve"]  # type: ignore[union-attr]
    assert len(serves) == 1 and serves[0].callback.__module__ == "morphserve.cli.serve"  # type: ignore[union-attr]
    options = {p.name: p for p in _serve().params if p.opts[0].startswith("--")}
    assert set(Settings.model_fields) <= set(options), set(Settings.model_fields) - set(options)
    assert "--model" in options["models"].opts and options["models"].multiple
    assert "--batch-wait" in options["batch_wait"].opts
    assert options["fsync"].secondary_opts == ["--no-fsync"]
    for name, field in Settings.model_fields.items():  # the help says which variable sets it
        assert f"MORPHSERVE_{name.upper()}" in (options[name].help or ""), name
        assert field.default is None or options[name].default is None  # unset flags leave Settings' defaults


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-wait", "sometimes"], "sometimes"),
        (["--workers", "2", "--journal", "memory"], "workers > 1 need a journal they share"),
        (["--journal", "mysql://u@h/db"], "--journal: "),
        (["--port", "70000"], "--port: "),
    ],
)
def test_a_bad_value_is_one_line_and_exit_1(args: list[str], message: str) -> None:
    r = CliRunner().invoke(cli, ["serve", *args])
    assert r.exit_code in (1, 2) and message in r.output, r.output
    assert "Traceback" not in r.output


def test_the_help_shows_each_settings_default() -> None:
    """The option's own default stays None (above); its help shows the default Settings applies."""
    options = {p.name: p for p in _serve().params if p.opts[0].startswith("--")}
    helps = {name: options[name].help or "" for name in Settings.model_fields}
    assert all("[default: " in h for h in helps.values()), [n for n, h in helps.items() if "[default: " not in h]
    assert helps["port"].endswith("[default: 8000]") and helps["host"].endswith("[default: 127.0.0.1]")
    assert helps["models"].endswith("[default: digits]") and helps["fsync"].endswith("[default: true]")
    assert helps["max_batch_delay_ms"].endswith("[default: 2.0]") and helps["keep_versions"].endswith("[default: all]")
    # a description that says its default itself gives it to the [default: ...], once
    assert helps["max_model_bytes"].endswith("[default: half the memory]")
    assert helps["max_model_bytes"].count("half the memory") == 1
