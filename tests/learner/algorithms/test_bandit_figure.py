"""The figure script runs and draws a PNG (a short run; the committed figure uses the default steps)."""

from pathlib import Path

import pytest

from learner.algorithms.bandit import main


def test_bandit_script_writes_the_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path), "--steps", "40"])
    figure = tmp_path / "bandit_regret.png"
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "CoPG" in printed and "naive off-policy PG" in printed
