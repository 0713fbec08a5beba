"""`python -m weir`: the same CLI and web UI as Rust runs, on the same state directory."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import weir as flyte
from conftest import STATE, weir_cli

env = flyte.TaskEnvironment("cli")


@env.task
async def shout(word: str) -> str:
    return word.upper()


def test_get_runs_actions_io_and_tasks():
    run = flyte.with_runcontext(name="cli-shout").run(shout, word="weir")
    assert run.outputs() == "WEIR"
    runs = {r["name"]: r for r in json.loads(weir_cli("get", "runs", "-o", "json").stdout)}
    assert runs["cli-shout"]["task"] == "cli.shout" and runs["cli-shout"]["status"] == "succeeded"
    io = json.loads(weir_cli("get", "io", "cli-shout", "a0", "-o", "json").stdout)
    assert json.dumps(io).count("WEIR") >= 1, io
    # `tasks` lists the tasks of the modules imported with --import.
    here = os.path.join(os.path.dirname(__file__), "test_cli.py")
    listed = weir_cli("--import", here, "tasks").stdout
    assert "cli.shout" in listed, listed


def test_the_web_ui_shows_python_runs():
    flyte.with_runcontext(name="cli-ui").run(shout, word="ui").outputs()
    ui = subprocess.Popen(
        [sys.executable, "-m", "weir", "ui", "--port", "0"],
        env=dict(os.environ, WEIR_STATE_DIR=STATE),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ui.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "api/runs", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        assert "cli-ui" in body and "cli.shout" in body, body[:500]
    finally:
        ui.terminate()
        ui.wait(timeout=10)
