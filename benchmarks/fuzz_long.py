"""Long fuzz run of the API from its own OpenAPI schema (run by hand; CI runs the
bounded version in tests/reliability/test_reliability_fuzz.py).

Every operation gets N generated requests in each of schemathesis's modes (valid
and invalid bodies), against the app in-process with the fake engine, once
without keys and once with an API key (the key sent on half the requests).
Outbound connections are confined to loopback. The run fails on any 5xx, on an
error that is not OpenAI-shaped JSON, or on a concurrency slot left held.

    .venv/bin/python benchmarks/fuzz_long.py --examples 500
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests" / "server")]

from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402
from server_support import FakeEngine  # noqa: E402

KEY = "fuzz-key"


def confine_to_loopback() -> None:
    """Any connection the fuzzed media URLs lead to must stay on this machine."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else ""
        if isinstance(address, tuple) and host not in ("127.0.0.1", "::1", "localhost"):
            raise ConnectionRefusedError(f"fuzz run: no connection to {address!r}")
        return real_connect(sock, address)

    socket.socket.connect = connect


def fuzz(examples: int, *, keyed: bool) -> Counter:
    app = create_app(
        Settings(model="/models/fake", max_request_bytes=1024 * 1024, api_keys=[KEY] if keyed else []),
        engine=FakeEngine(),
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    statuses: Counter = Counter()
    failures: list[str] = []
    with TestClient(app):
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                sent = 0

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
                def one(case) -> None:
                    nonlocal sent
                    sent += 1
                    headers = {"Authorization": f"Bearer {KEY}"} if keyed and sent % 2 else None
                    response = case.call(headers=headers)
                    statuses[response.status_code] += 1
                    problem = None
                    if response.status_code >= 500:
                        problem = "5xx"
                    elif response.status_code >= 400 and operation.path != "/metrics":
                        try:
                            error = response.json()["error"]
                            if not (error["message"] and error["type"]):
                                problem = "empty error"
                        except Exception:
                            problem = "error is not OpenAI JSON"
                    if problem:
                        failures.append(f"{problem}: {operation.method.upper()} {operation.path} {case.body!r:.300} -> "
                                        f"{response.status_code} {response.text[:300]}")

                started = time.perf_counter()
                try:
                    one()
                except Unsatisfiable:  # e.g. no invalid form of a request without parameters
                    pass
                print(f"{'keyed' if keyed else 'open '} {operation.method.upper():6} {operation.path:32} "
                      f"{mode.value:8} {sent:5} requests {time.perf_counter() - started:6.1f} s", flush=True)
        if app.state.limiter.active:
            failures.append(f"{app.state.limiter.active} concurrency slots still held")
    for failure in failures[:20]:
        print("FAIL", failure)
    if failures:
        raise SystemExit(f"{len(failures)} failures")
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=500, help="generated requests per operation and mode")
    args = parser.parse_args()
    confine_to_loopback()
    started = time.perf_counter()
    statuses = fuzz(args.examples, keyed=False) + fuzz(args.examples, keyed=True)
    total = sum(statuses.values())
    print(f"{total} requests in {time.perf_counter() - started:.0f} s, 0 failures; statuses: {dict(sorted(statuses.items()))}")


if __name__ == "__main__":
    main()
