"""Serve the stack over the OpenAI chat completions API, constrained to JSON.

python server.py --model DIR [--draft DIR] [--host 127.0.0.1] [--port 8000] [--deadline 300]
POST /v1/chat/completions with response_format {"type": "json_schema", "json_schema": {"schema": {...}}} (compact
JSON valid under the schema) or {"type": "json_object"} (any compact JSON object), streamed (SSE
chat.completion.chunk) or not; GET /v1/models. A schema that does not compile within 30 s, or that xgrammar refuses,
is a 400 naming the problem. A reply cut by max_tokens (default 256) or the deadline has finish_reason "length" and
its content is the JSON so far, possibly incomplete. Everything else (one engine thread, stop, usage, errors, the
fields refused) is openai_server.py's.
"""

import re
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as CompileTimeout

import blas
from knobs import Knobs
from openai_server import Job, RequestError, Stack, arguments, main

COMPILE_S = 30
ANY_OBJECT = {"type": "object"}


class JsonStack(Stack):
    fields = frozenset({"response_format"})
    compiling = ThreadPoolExecutor(max_workers=2, thread_name_prefix="grammar")

    def __init__(self, args, knobs: Knobs):
        super().__init__(args)
        self.knobs = knobs

    def build(self) -> None:
        from serve import build_engine

        self.engine = build_engine(self.args.model, self.knobs, self.args.draft)
        self.tokenizer = self.engine.tokenizer

    def prepare(self, raw: dict) -> dict:
        compiled = self.compiling.submit(self.engine.constraint, schema_of(raw.get("response_format")))
        try:
            return {"constraint": compiled.result(timeout=COMPILE_S)}
        except CompileTimeout:
            raise RequestError(f"the JSON schema did not compile within {COMPILE_S} s", "response_format") from None
        except Exception as error:  # noqa: BLE001 - xgrammar raises several types for bad schemas
            reason = re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", str(error).strip())
            raise RequestError(f"the JSON schema could not be compiled: {reason}", "response_format") from None

    def decode(self, job: Job):
        return self.engine.stream(job.chat.prompt, job.chat.own["constraint"], job.chat.max_tokens)


def schema_of(response_format) -> dict:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_object":
        return ANY_OBJECT
    if kind != "json_schema":
        raise RequestError('response_format must be {"type": "json_schema", "json_schema": {...}} or '
                           '{"type": "json_object"}: this stack answers in JSON only', "response_format")  # fmt: skip
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        raise RequestError("response_format.json_schema.schema must be a JSON schema object", "response_format")
    return schema


if __name__ == "__main__":
    knobs = Knobs.read()
    blas.select(knobs.blas)
    main(JsonStack(arguments(__doc__, "mlx-lm model folder").parse_args(), knobs))
