"""The examples as users run them, on the tiny checkpoint each builds, with small arguments.

Each example that serves starts its own server (examples/local_server.py) and stops it with
SIGINT; the test checks its output, the clean stop, and the server log. chat_client.py and
tool_agent.py run against the server of tests/test_serving.py.
"""

import re

from serving import log_problems, run_example


def test_offline_batch(tmp_path):
    out = run_example("offline_batch.py", "--max-tokens", "8", "--workdir", str(tmp_path))
    assert out.count("\n### ") == 6  # one section per line of examples/prompts.txt
    assert out.count("[8 tokens, finish: length]") == 6
    assert re.search(r"6 prompts, \d+ prompt tokens, 48 generated tokens", out)
    assert log_problems(out) == []


def test_serve_mtp(tmp_path):
    out = run_example("serve_mtp.py", "--max-tokens", "12", "--workdir", str(tmp_path))
    m = re.search(r"MTP with 2 speculative tokens: (\d+) draft tokens, (\d+) accepted", out)
    assert m and int(m[1]) > 0, out[-3000:]
    assert "stopped with SIGINT: exit code 0" in out
    log = (tmp_path / "server.log").read_text()
    assert "speculative_config=SpeculativeConfig(method='mtp'" in log
    assert log_problems(log) == []


def test_serve_yarn(tmp_path):
    """Native context 256, YaRN factor 4: a prompt of about 900 tokens is served, one longer
    than --max-model-len (1024) is refused, and the plugin built the YaRN rope."""
    out = run_example("serve_yarn.py", "--workdir", str(tmp_path))
    n = int(re.search(r"needle prompt: (\d+) tokens", out)[1])
    assert 256 < n <= 1024
    assert re.search(rf"answer: .* \({n} prompt tokens, 16 generated\)", out)
    assert "rejected: HTTP 400" in out
    assert re.search(r'vllm_qwen3next: rope .*"rope_type": "yarn"', out)
    assert "stopped with SIGINT: exit code 0" in out
    assert log_problems((tmp_path / "server.log").read_text()) == []
