"""CLIs speak, not trace: the package's errors become one line `PROG: error: ...` and exit code 2;
--debug or LEWM_DEBUG=1 gives the traceback; bugs are not hidden."""
import sys

import pytest

from lewm_fast.cli import run_cli


def _fails(exc):
    def main(argv):
        raise exc
    return main


def test_user_error_is_one_line_and_exit_code_2(capsys, monkeypatch):
    monkeypatch.delenv("LEWM_DEBUG", raising=False)
    from lewm_fast.collect import main
    assert run_cli(main, ["--env", "tworoom", "--episodes", "0", "--out", "x.h5"], prog="lewm_fast.collect") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lewm_fast.collect: error: --episodes must be >= 1, got 0")
    assert run_cli(_fails(SystemExit("--lr must be finite, got nan")), [], prog="p") == 2
    assert capsys.readouterr().err == "p: error: --lr must be finite, got nan\n"
    assert run_cli(_fails(SystemExit(0)), [], prog="p") == 0          # plain exits pass through
    assert run_cli(lambda argv: {"report": 1}, [], prog="p") == 0     # mains returning reports succeed
    assert run_cli(lambda argv: 3, [], prog="p") == 3


def test_debug_flag_and_env_var_give_the_traceback(monkeypatch):
    seen = []
    def main(argv):
        seen.append(argv)
        raise FileNotFoundError("dataset not found: x.h5")
    monkeypatch.delenv("LEWM_DEBUG", raising=False)
    with pytest.raises(FileNotFoundError):
        run_cli(main, ["--out", "y", "--debug"], prog="p")
    assert seen[-1] == ["--out", "y"]        # --debug is not passed on to the tool's own parser
    monkeypatch.setenv("LEWM_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        run_cli(main, [], prog="p")


def test_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("LEWM_DEBUG", raising=False)
    with pytest.raises(KeyError):
        run_cli(_fails(KeyError("oops")), [], prog="p")
    with pytest.raises(RuntimeError):
        run_cli(_fails(RuntimeError("CUDA error")), [], prog="p")


def test_every_cli_reports_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys):
    """Each module's own `python -m` entry (its __main__ block, run in this process with runpy)."""
    import runpy
    import warnings
    monkeypatch.delenv("LEWM_DEBUG", raising=False)
    missing = str(tmp_path / "missing.h5")
    nockpt = str(tmp_path / "nope.safetensors")
    calls = {
        "lewm_fast.collect": ["--env", "tworoom", "--episodes", "0", "--out", str(tmp_path / "c.h5")],
        "lewm_fast.train": ["--data", missing, "--out", str(tmp_path / "run")],
        "lewm_fast.eval": ["--env", "tworoom", "--checkpoint", nockpt],
        "lewm_fast.surprise": ["--env", "tworoom", "--checkpoint", nockpt, "--out", str(tmp_path)],
        "lewm_fast.probe": ["--env", "pusht", "--checkpoint", nockpt, "--dataset", missing, "--out", str(tmp_path)],
        "lewm_fast.demo": ["--checkpoint", nockpt, "--episodes", "1", "--workdir", str(tmp_path / "demo")],
        "bench.cem": ["--env", "pusht", "--checkpoint", nockpt, "--out", str(tmp_path / "cem.json")],
        "bench.eval": ["--env", "pusht", "--checkpoint", nockpt, "--dataset", missing, "--out", str(tmp_path / "e.json")],
        "bench.collect": ["--env", "tworoom", "--episodes", "0"],
        "bench.data": ["--file", missing],
        "bench.render": ["--frames", "0"],
    }
    for module, argv in calls.items():
        monkeypatch.setattr(sys, "argv", [module, *argv])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # runpy: module already imported
            with pytest.raises(SystemExit) as exit_:
                runpy.run_module(module, run_name="__main__", alter_sys=False)
        err = capsys.readouterr().err
        assert exit_.value.code == 2, (module, exit_.value.code, err[-1500:])
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{module}: error: "), (module, err[-1500:])
        assert any(w in lines[0] for w in ("not found", "must be >= 1")), (module, lines[0])


def test_resume_takes_unchanged_run_arguments_from_the_checkpoint_and_says_so(tmp_path, capsys):
    from helpers import write_synthetic
    from lewm_fast.train import train
    data = write_synthetic(tmp_path / "syn.h5", n_episodes=6, length=30)
    common = ["--data", data, "--out", str(tmp_path / "run"), "--preset", "tiny", "--workers", "0", "--no-progress",
              "--threads", "1"]
    train([*common, "--batch-size", "4", "--max-steps", "2", "--lr", "1e-3", "--ckpt-every", "1"])
    capsys.readouterr()
    result = train([*common, "--resume"])          # batch size, steps and lr left out: the checkpoint's are used
    out = capsys.readouterr().out
    assert "--resume: from the checkpoint: --max-steps 2, --batch-size 4, --lr 0.001" in out
    assert result["step"] == 2
    with pytest.raises(SystemExit, match="--batch-size 8 differs from the checkpoint's 4"):
        train([*common, "--resume", "--batch-size", "8"])


def test_os_errors_print_their_message_without_the_errno_prefix(capsys):
    import errno
    from lewm_fast.data import WriteError
    assert run_cli(_fails(WriteError(errno.ENOSPC, "not enough disk space for the next episode")), [], prog="p") == 2
    assert capsys.readouterr().err.startswith("p: error: not enough disk space for the next episode  (")
    assert run_cli(_fails(PermissionError(errno.EACCES, "Permission denied", "/x/y.h5")), [], prog="p") == 2
    assert capsys.readouterr().err.startswith("p: error: Permission denied: /x/y.h5  (")
