"""A run started from Python survives a SIGKILL and resumes without re-running what succeeded."""

import json
import os
import subprocess
import sys

from conftest import weir_cli

APP = os.path.join(os.path.dirname(__file__), "crash_app.py")


def test_sigkill_then_resume(tmp_path):
    state, marks = str(tmp_path / "state"), tmp_path / "marks"
    marks.mkdir()
    env = dict(os.environ, WEIR_STATE_DIR=state, MARK_DIR=str(marks), CRASH="1")
    first = subprocess.run([sys.executable, APP, "crashy"], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == -9, (first.returncode, first.stderr)
    before = sorted(p.name.split("-")[0] for p in marks.iterdir())
    assert before == ["items", "step0", "step1", "step2"], before
    runs = json.loads(weir_cli("get", "runs", "-o", "json", state=state).stdout)
    assert runs[0]["name"] == "crashy" and runs[0]["status"] == "running", runs

    # Without the module that defines the tasks, nothing runs, and the error says what to do.
    blind = subprocess.run(
        [sys.executable, "-m", "weir", "resume", "crashy"], env=env, capture_output=True, text=True, timeout=120
    )
    assert blind.returncode != 0 and "unknown task" in blind.stderr and "--import" in blind.stderr, blind.stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "weir", "--import", APP, "resume", "crashy", "-o", "json"],
        env=dict(env, CRASH="0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    output = json.loads(resumed.stdout)["output"]
    assert output["steps"] == [0, 10, 20, 30, 40] and output["label"].startswith("5 steps in "), output
    pids = {}
    for p in marks.iterdir():
        name, pid = p.name.split("-")
        pids.setdefault(name, set()).add(pid.split(".")[0])
    first_pid = next(iter(pids["step0"]))
    # Steps that succeeded before the kill ran once; the rest ran in the resuming process.
    for step in ("step0", "step1", "step2"):
        assert pids[step] == {first_pid}, pids
    for step in ("step3", "step4"):
        assert len(pids[step]) == 1 and pids[step] != {first_pid}, pids
    # The async-generator trace was replayed: the same random items, not new ones.
    recorded = [json.loads(p.read_text()) for p in marks.iterdir() if p.name.startswith("items-")]
    assert len(recorded) == 2 and recorded[0] == recorded[1], recorded
    runs = json.loads(weir_cli("get", "runs", "-o", "json", state=state).stdout)
    assert runs[0]["status"] == "succeeded", runs
