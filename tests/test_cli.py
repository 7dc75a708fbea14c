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


@pytest.mark.slow
def test_dry_run_runs_arc_nano2_on_real_tasks_with_its_registered_settings(tmp_path, capsys):
    import json
    import re

    from arc_ttft import models

    out = tmp_path / "dry"
    assert cli.main(["dry-run", "--max-tasks", "1", "--output", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"score: \d\.\d{4} \([01]/1 tasks\)", lines[-1]), lines[-1]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["model"] == "arc-nano2" and cfg["model"]["format"] == "digits"
    assert cfg["data"]["challenges"] == "arc1-simple"  # real tasks, held out of training
    assert lines[0].startswith("device: CPU, dtype: float32, backend: hf")
    for key, value in models.REGISTRY["arc-nano2"].run_defaults.items():
        section = next(s for s in cfg.values() if isinstance(s, dict) and key in s)
        assert section[key] == value, key
