"""Send one chat request to an OpenAI-compatible server and print the reply.

    python examples/chat_client.py [--port 8000] [--model NAME] [--wait SECONDS] "message"

With the real model (Qwen/Qwen3-Next-80B-A3B-Instruct served on GPUs) nothing
changes here but --model; the tiny random checkpoint replies with random text.
"""

import argparse
import time
import urllib.request

from openai import OpenAI


def wait_healthy(base: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server at {base} not healthy after {timeout:.0f}s")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("message")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="Qwen/Qwen3-Next-80B-A3B-Instruct")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for /health")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}"
    if args.wait:
        wait_healthy(base, args.wait)
    client = OpenAI(base_url=f"{base}/v1", api_key="EMPTY")
    reply = client.chat.completions.create(
        model=args.model,
        messages=[{"role": "user", "content": args.message}],
        # The model card's recommended sampling.
        temperature=0.7,
        top_p=0.8,
        extra_body={"top_k": 20, "min_p": 0.0},
        max_tokens=args.max_tokens,
    )
    print(f"user: {args.message}")
    print(f"assistant: {reply.choices[0].message.content}")


if __name__ == "__main__":
    main()
