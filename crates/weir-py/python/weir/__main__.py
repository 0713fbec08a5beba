"""`python -m weir [--import MODULE_OR_FILE ...] COMMAND ...`: weir's command line.

The same commands, state directory and UI as the `weir` binary (`get runs`, `get actions`,
`get io`, `resume`, `ui`, ...). `--import` loads the Python modules or files that define the
tasks first, so that commands which run tasks (`resume`, `run`) find them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys


def _load(target: str) -> None:
    if target.endswith(".py") or os.path.sep in target:
        path = os.path.abspath(target)
        name = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise SystemExit(f"error: cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        importlib.import_module(target)


def main(argv: list[str]) -> int:
    from . import _runtime, _weir

    rest: list[str] = []
    imports: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--import":
            if i + 1 >= len(argv):
                print("error: --import needs a module or a .py file", file=sys.stderr)
                return 2
            imports.append(argv[i + 1])
            i += 2
        elif argv[i].startswith("--import="):
            imports.append(argv[i].split("=", 1)[1])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    if any(a == "--workers" or a.startswith("--workers=") for a in rest):
        print(
            "error: --workers is for Rust binaries; a Python process runs its tasks in process, and "
            "the workers of reusable environments are started by the runs (weir.run) that need them",
            file=sys.stderr,
        )
        return 2
    if rest[:1] == ["worker"]:
        # A worker runs tasks; the modules it imports must not start runs.
        os.environ["WEIR_IN_WORKER"] = "1"
    for target in imports:
        _load(target)
    # Commands that run tasks need the loop that runs Python bodies.
    _runtime.loop()
    code = _weir.cli(rest)
    runs_tasks = {"run", "resume", "rerun", "worker"} & set(rest[:1])
    if code != 0 and runs_tasks and not imports:
        print(
            "hint: a Python process finds tasks by importing the modules that define them: "
            f"python -m weir --import app.py {' '.join(rest)}",
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
