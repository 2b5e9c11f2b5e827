"""Helpers for the serving tests: the examples' server runner, running examples, log checks.

The tests start servers with `examples/local_server.py`, the same code the examples use, so
what the tests exercise is what a user runs.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

from local_server import LocalServer, tiny_server_args  # noqa: E402,F401


def run_example(script: str, *args: str, timeout: float = 600, cwd: Path | None = None) -> str:
    """Run `examples/<script> args` with this Python; return its stdout and stderr (raises on failure)."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd or ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited with {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc.stdout


# vLLM 0.32 race at shutdown (vllm-project/vllm#48745, fix proposed in #49000): the engine core is
# torn down before AsyncLLM's output handler is cancelled, and the handler may log the resulting
# EngineDeadError with a traceback although the shutdown goes as planned. Any model, any signal.
_SHUTDOWN_RACE = re.compile(r" ERROR .*\[async_llm\.py:\d+\] ")


def log_problems(text: str) -> list[str]:
    """Lines of a server log that show a failure: tracebacks and ERROR records, except vLLM's
    known EngineDeadError report during a requested shutdown."""
    before, mark, after = text.partition("[shutdown] API server: shutdown triggered")
    problems = [line for line in before.splitlines() if _is_problem(line)]
    race = [line for line in after.splitlines() if _SHUTDOWN_RACE.search(line)]
    if race and not any("EngineDeadError" in line for line in race):
        problems += race
    problems += [line for line in after.splitlines() if _is_problem(line) and not _SHUTDOWN_RACE.search(line)]
    return problems


def _is_problem(line: str) -> bool:
    return "Traceback" in line or " ERROR " in line
