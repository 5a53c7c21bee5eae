"""The load generator of `atelier bench serve`: OpenAI-compatible servers, one after another, under the same
request sequence, driven by the real `openai` client (no retries, a timeout per request).

python -m app.bench.load PLAN.json OUT.json

The plan (written by app/bench/servebench.py) names the rows (each a server's argv, folder, environment, how it
says it is ready, the model name to send, whether it takes response_format) and the requests (messages, schema,
max_tokens, and for open-loop load an arrival time). Closed loop: `clients` threads, each sending its next request
when its last one was answered. Open loop: each request is sent at its arrival time whatever is still in flight,
and its latency counts from that time. Every request ends as one outcome: answered (HTTP 200, with content,
finish_reason, usage), refused (4xx), server_error (5xx), dropped (connection closed or reset, or a stream that
ended without a finish_reason), timeout, or bad_response (an answer the client could not read). Nothing a server
does ends the load: a server that dies mid-row leaves the rest of its requests as errors.

Runs inside the bench's harness sandbox: its private network is the only one the confined servers share.
"""

import importlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

READY_POLL_S = 0.25
STOP_GRACE_S = 10.0


def main() -> None:
    plan_path, out_path = (Path(arg) for arg in sys.argv[1:3])
    plan = json.loads(plan_path.read_text())
    results: dict[str, Any] = {"rows": {}}
    for row in plan["rows"]:
        results["rows"][row["key"]] = run_row(row, plan)
        out_path.write_text(json.dumps(results))


def say(message: str) -> None:
    print(message, flush=True)


def run_row(row: dict, plan: dict) -> dict:
    """One server started, warmed up with one request, loaded with the plan's requests, then stopped."""
    server = Server(row)
    result: dict[str, Any] = {"outcomes": [], "ready_s": None, "wall_s": None, "warmup": None, "start_error": ""}
    try:
        started = time.perf_counter()
        try:
            server.start(plan["ready_timeout"])
        except ServerError as error:
            result["start_error"] = str(error)
            result["outcomes"] = [
                never_sent(request, str(error)) for request in plan["requests"][: row.get("requests")]
            ]
            say(f"row {row['key']}: did not start: {error}")
            return result
        result["ready_s"] = time.perf_counter() - started
        say(f"row {row['key']} ready in {result['ready_s']:.1f} s on port {server.port}: {row['label']}")
        result["warmup"] = ask(server.client(plan["timeout"]), row, plan["warmup"], plan["stream"], time.perf_counter())
        say(f"row {row['key']} warm-up: {result['warmup']['kind']} in {result['warmup']['latency_s']:.2f} s")
        result["outcomes"], result["wall_s"] = load(server, row, plan)
    finally:
        result["exit_code"] = server.stop()
        result["log_tail"] = server.log_tail()
    return result


def never_sent(request: dict, why: str) -> dict:
    return {"id": request["id"], "case": request["case"], "kind": "dropped", "message": f"server not running: {why}",
            "latency_s": 0.0, "sent_s": 0.0}  # fmt: skip


def load(server: "Server", row: dict, plan: dict) -> tuple[list[dict], float]:
    requests, stream, timeout = plan["requests"][: row.get("requests")], plan["stream"], plan["timeout"]
    outcomes: list[dict | None] = [None] * len(requests)
    start = time.perf_counter()
    done = {"n": 0}
    progress = threading.Lock()

    def record(i: int, outcome: dict) -> None:
        outcomes[i] = outcome | {"sent_s": outcome.pop("sent_at") - start}
        with progress:
            done["n"] += 1
            if done["n"] % max(1, len(requests) // 10) == 0 or done["n"] == len(requests):
                say(f"row {row['key']}: {done['n']}/{len(requests)} answered, {time.perf_counter() - start:.1f} s")

    if plan.get("rate"):
        with ThreadPoolExecutor(max_workers=min(len(requests), 256)) as pool:
            clients = threading.local()

            def send(i: int, due: float) -> None:
                if not hasattr(clients, "client"):
                    clients.client = server.client(timeout)
                record(i, ask(clients.client, row, requests[i], stream, due))

            for i, request in enumerate(requests):
                due = start + request["at"]
                time.sleep(max(0.0, due - time.perf_counter()))
                pool.submit(send, i, due)
    else:
        pending: queue.Queue = queue.Queue()
        for i in range(len(requests)):
            pending.put(i)

        def client_loop() -> None:
            client = server.client(timeout)
            while True:
                try:
                    i = pending.get_nowait()
                except queue.Empty:
                    return
                record(i, ask(client, row, requests[i], stream, time.perf_counter()))

        threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(plan["clients"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    wall = time.perf_counter() - start
    return [o for o in outcomes if o is not None], wall


def ask(client, row: dict, request: dict, stream: bool, sent_at: float) -> dict:
    """One request as the row's server takes it; its outcome, timed from sent_at (its due time in open loop)."""
    import openai

    timeouts, transport = transport_errors()
    body: dict[str, Any] = {"model": row["model"], "messages": request["messages"], "max_tokens": request["max_tokens"]}
    if row["response_format"]:
        spec = {"name": "answer", "schema": request["schema"], "strict": True}
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    outcome: dict[str, Any] = {"id": request["id"], "case": request["case"], "sent_at": sent_at}
    try:
        if stream:
            outcome |= streamed(client, body, sent_at)
        else:
            answer = client.chat.completions.create(**body)
            choice = answer.choices[0]
            outcome |= {"kind": "answered", "content": choice.message.content or "",
                        "finish_reason": choice.finish_reason, "usage": usage_of(answer.usage)}  # fmt: skip
    except (openai.APITimeoutError, timeouts) as error:
        outcome |= {"kind": "timeout", "message": describe(error)}
    except (openai.APIConnectionError, transport) as error:
        outcome |= {"kind": "dropped", "message": describe(error)}
    except openai.APIStatusError as error:
        kind = "refused" if 400 <= error.status_code < 500 else "server_error"
        outcome |= {"kind": kind, "status": error.status_code, "message": status_message(error)}
    except Exception as error:  # noqa: BLE001 - an answer the client cannot read is the server's error, counted
        outcome |= {"kind": "bad_response", "message": describe(error)}
    outcome["latency_s"] = time.perf_counter() - sent_at
    return outcome


def transport_errors() -> tuple[type[Exception], type[Exception]]:
    """The timeout and transport error bases of the HTTP library under the openai client (httpx2, httpx before),
    which a stream's iteration can raise unwrapped."""
    import openai

    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return module.TimeoutException, module.TransportError
    return openai.APITimeoutError, openai.APIConnectionError


def streamed(client, body: dict, sent_at: float) -> dict:
    content, finish, usage, ttft = "", None, None, None
    with client.chat.completions.create(**body, stream=True, stream_options={"include_usage": True}) as chunks:
        for chunk in chunks:
            if chunk.usage is not None:
                usage = usage_of(chunk.usage)
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    ttft = time.perf_counter() - sent_at if ttft is None else ttft
                    content += choice.delta.content
                finish = choice.finish_reason or finish
    if finish is None:
        return {"kind": "dropped", "message": "the stream ended without a finish_reason", "content": content}
    return {"kind": "answered", "content": content, "finish_reason": finish, "usage": usage, "ttft_s": ttft}


def usage_of(usage) -> dict | None:
    if usage is None:
        return None
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def describe(error: BaseException) -> str:
    """The error and its causes, e.g. `APIConnectionError: Connection error. <- RemoteProtocolError: ...`."""
    parts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen and len(parts) < 4:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {str(error)[:200]}")
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return " <- ".join(parts)


def status_message(error) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    inner = body.get("error", body)
    message = inner.get("message") if isinstance(inner, dict) else None
    return str(message or error.message)[:500]


class ServerError(RuntimeError):
    pass


class Server:
    """A row's server process: started in its own session, its output in a temporary file; ready when it prints
    {"ready": true, "port": N} (ready = "line") or answers GET /health on the port the plan gave (ready = "health").
    """

    def __init__(self, row: dict):
        self.row = row
        self.port: int | None = None
        self.log = tempfile.TemporaryFile()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float) -> None:
        argv = list(self.row["argv"])
        if self.row["ready"] == "health":
            self.port = free_port()
            argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        self.process = subprocess.Popen(
            argv, cwd=self.row["cwd"], env={**os.environ, **self.row.get("env", {})}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True,
        )  # fmt: skip
        if self.row["ready"] == "line":
            self.port = self.ready_line(timeout)
        else:
            self.wait_health(timeout)

    def ready_line(self, timeout: float) -> int:
        assert self.process is not None and self.process.stdout is not None
        lines: queue.Queue = queue.Queue()

        def read(stdout) -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ServerError(f"not ready within {timeout:.0f} s") from None
            if line is None:
                raise ServerError(f"exited with code {self.process.wait()} before it was ready: {self.log_tail(600)}")
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("ready") is True and isinstance(message.get("port"), int):
                return message["port"]

    def wait_health(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"exited with code {self.process.returncode}: {self.log_tail(600)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(READY_POLL_S)
        raise ServerError(f"no answer on /health within {timeout:.0f} s")

    def client(self, timeout: float):
        from openai import OpenAI

        return OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="none", max_retries=0, timeout=timeout)

    def stop(self) -> int | None:
        """Stop the server (its session: a confined one ends with its sandbox); its exit code if it had died."""
        if self.process is None:
            return None
        died = self.process.poll()
        if died is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        return died

    def log_tail(self, size: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-size:].strip()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
