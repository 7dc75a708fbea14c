"""Every command's --help renders (help texts are %-formatted by argparse)."""

from __future__ import annotations

import pytest

from arc_ttft import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_working_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([name, "--help"])
    assert e.value.code == 0
    assert "usage: arc-ttft" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
