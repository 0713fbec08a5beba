import os
import subprocess
import sys
import tempfile

import pytest

# One engine per process: every test of this session shares a fresh state directory.
STATE = tempfile.mkdtemp(prefix="weir-pytest-")
os.environ["WEIR_STATE_DIR"] = STATE


@pytest.fixture
def state_dir() -> str:
    return STATE


def weir_cli(*args: str, state: str = STATE, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m weir ...` in a process of its own, on `state`."""
    env = dict(os.environ, WEIR_STATE_DIR=state)
    out = subprocess.run(
        [sys.executable, "-m", "weir", *args], capture_output=True, text=True, env=env, timeout=120
    )
    if check and out.returncode != 0:
        raise AssertionError(f"python -m weir {' '.join(args)} exited {out.returncode}:\n{out.stderr}")
    return out
