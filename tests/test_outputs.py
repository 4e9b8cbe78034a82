"""Outputs are never lost nor silently replaced: a claim per output (two processes, one output), the final rename that
does not replace what appeared meanwhile, cleanup of what a killed run left (SIGKILL during a save, then a rerun),
an unwritable output refused before any work."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tfspeed import _io

_HOLD = textwrap.dedent("""
    import sys, time
    from tfspeed import _io
    with _io.atomic_path(sys.argv[1]) as tmp:
        tmp.mkdir()
        (tmp / "part").write_bytes(b"x" * 1_000_000)
        print("writing", flush=True)
        time.sleep(120)
""")


def _start_holder(out):
    """A real process in the middle of an atomic save of `out` (it has claimed it and written half of it)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _litter(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def test_a_second_run_to_the_same_output_fails_at_once(tmp_path):
    out = tmp_path / "model"
    proc = _start_holder(out)
    try:
        for overwrite in (False, True):  # not even --overwrite may write an output another run is writing
            with pytest.raises(FileExistsError, match=f"being written by another tfspeed run \\(pid {proc.pid}\\)"):
                _io.check_writable(out, overwrite=overwrite)
    finally:
        proc.terminate()
        proc.wait()


def test_killed_save_leaves_litter_that_the_next_run_removes(tmp_path):
    out = tmp_path / "model"
    proc = _start_holder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _litter(tmp_path, "model")
    assert any(n.endswith(".tmp") for n in left) and ".model.lock" in left, left  # what a SIGKILL leaves
    with pytest.warns(RuntimeWarning, match="left beside .* by a run that was killed"):
        with _io.atomic_path(out) as tmp:
            tmp.write_text("done")
    assert out.read_text() == "done" and _litter(tmp_path, "model") == []


def test_sigterm_unwinds_and_leaves_nothing(tmp_path):
    out = tmp_path / "model"
    code = _HOLD.replace("import sys, time", "import signal, sys, time\n"
                         "signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.terminate()
    assert proc.wait() == 143
    assert _litter(tmp_path, "model") == [] and not out.exists()


def test_an_output_that_appeared_meanwhile_is_kept_and_so_is_ours(tmp_path):
    out = tmp_path / "report.json"
    with pytest.raises(FileExistsError, match="created by something else while this run worked"):
        with _io.atomic_path(out) as tmp:
            tmp.write_text("ours")
            out.write_text("theirs")  # e.g. another program, which took no claim
    assert out.read_text() == "theirs"
    assert (tmp_path / f"report.json.{os.getpid()}").read_text() == "ours"
    assert _litter(tmp_path, "report.json") == []


def test_overwrite_replaces_only_a_complete_output(tmp_path):
    out = tmp_path / "dir"
    out.mkdir()
    (out / "old").write_text("old")
    with pytest.raises(RuntimeError, match="failed"):
        with _io.atomic_path(out, overwrite=True) as tmp:
            tmp.mkdir()
            raise RuntimeError("failed half way")
    assert (out / "old").read_text() == "old"  # a failed run leaves the old output as it was
    with _io.atomic_path(out, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new"] and _litter(tmp_path, "dir") == []


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="Cannot write `out`: .*a_file' is a file, not a folder"):
        _io.check_writable(tmp_path / "a_file" / "model")


def test_two_cli_runs_one_output(tmp_path, tiny_teacher_dir):
    """Two `tfspeed export` processes started together on one --out: one writes it, the other stops with an error
    naming the other run; the written file is whole."""
    out = tmp_path / "model.tflite"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-c", "import sys; from tfspeed.cli import main; sys.exit(main())", "export",
           str(tiny_teacher_dir), "--mode", "float32", "--no-metadata", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(e for code, e in results if code == 1)
    assert "ERROR:" in err and ("being written by another tfspeed run" in err or "already exists" in err), err
    from ai_edge_litert.interpreter import Interpreter

    Interpreter(model_path=str(out)).allocate_tensors()  # the file that won is complete
    assert _litter(tmp_path, "model.tflite") == []
