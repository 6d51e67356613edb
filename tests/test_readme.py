"""The README's two set-up commands are the project's contract: CI must run exactly the second one."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_starts_with_two_setup_commands():
    main, test = setup_commands()
    assert "pip install" in main and "pip install" in test
    assert "python -m pytest" in test
    assert "constraints.txt" in main and "constraints.txt" in test   # never an unpinned torch


def test_ci_runs_the_readme_test_command():
    _, test = setup_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci, f"README test command not found verbatim in .ci/run:\n{test}"
