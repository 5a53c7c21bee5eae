"""Serve the stack over the OpenAI chat completions API, with predicted outputs, on MLX.

python server.py --model DIR [--host 127.0.0.1] [--port 8000] [--deadline 300]
POST /v1/chat/completions with messages, optional prediction {"type": "content", "content": "..."} (a string or
a list of {"type": "text", "text": ...} parts), max_tokens / max_completion_tokens (default 256), stream; GET
/v1/models. Decoding is greedy: a temperature other than 0 is refused. usage.completion_tokens_details reports
accepted_prediction_tokens and rejected_prediction_tokens (predicted tokens not accepted). Everything else (one
engine thread, stop, usage, errors, the fields refused) is openai_server.py's.
"""

import blas
from knobs import Knobs
from openai_server import Job, RequestError, Stack, arguments, main


class PredictedStack(Stack):
    fields = frozenset({"prediction"})

    def build(self) -> None:
        from serve import build_engine

        self.engine = build_engine(self.args.model, Knobs.read())
        self.tokenizer = self.engine.tokenizer

    def template(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def prepare(self, raw: dict) -> dict:
        return {"prediction": prediction_of(raw.get("prediction"))}

    def decode(self, job: Job):
        from engine import Stats

        stats = Stats()
        for new, finish in self.engine.stream(job.chat.prompt, job.chat.own["prediction"], job.chat.max_tokens, stats):
            job.details = details(stats)
            yield new, finish


def details(stats) -> dict:
    rejected = max(stats.predicted - stats.accepted, 0)
    return {"accepted_prediction_tokens": stats.accepted, "rejected_prediction_tokens": rejected}


def prediction_of(prediction) -> str:
    if prediction is None:
        return ""
    if not isinstance(prediction, dict) or prediction.get("type") != "content":
        raise RequestError('prediction must be {"type": "content", "content": ...}', "prediction")
    content = prediction.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [None]
    if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        raise RequestError("prediction.content must be a string or a list of text parts", "prediction")
    return "".join(p["text"] for p in parts)


if __name__ == "__main__":
    if Knobs.read().weights == "fp32":
        blas.select(Knobs.read().blas)  # re-executes this process before any thread starts
    main(PredictedStack(arguments(__doc__, "mlx-lm model folder").parse_args()))
