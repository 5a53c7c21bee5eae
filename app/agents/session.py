"""One role's turn as a tool-calling loop over Chat Completions: a fresh context, the role's tools, and a typed
submit whose arguments are validated before they count. Every request and response goes to the transcript."""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import openai

from app.agents import budget, schemas
from app.agents.config import Config
from app.agents.tools import Toolbox, ToolError
from app.agents.transcript import Redactor, Transcript, transcript_path
from app.roles import RoleError
from app.run import ActiveRun

MAX_TURNS = 40
MAX_INVALID = 4


@dataclass
class Session:
    run: ActiveRun
    n: int
    role: str
    config: Config
    root: Path
    check: Callable[[dict], str | None] | None = None

    def submit(self, system: str, user: str) -> dict:
        """The role's validated submit arguments; RoleError when the model cannot produce them."""
        redact = Redactor(self.config.secrets())
        transcript = Transcript(transcript_path(self.run.dir, self.n, self.role), redact)
        tools = Toolbox(self.run, self.root, self.n)
        client = self._client()
        messages: list[Any] = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        invalid = 0
        for turn in range(1, MAX_TURNS + 1):
            budget.check(self.run, self.config.budget)
            self.run.progress.role(self.n, self.role, f"model turn {turn}")
            message = self._call(client, messages, transcript)
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls or []:
                answer = self._dispatch(tools, call.function.name, call.function.arguments)
                if isinstance(answer, dict):
                    return json.loads(redact(json.dumps(answer)))
                text, valid = answer
                messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
                invalid += not valid
                if invalid >= MAX_INVALID:
                    transcript.write("error", {"error": text})
                    raise RoleError(f"{invalid} invalid tool calls; the last: {text}")
        raise RoleError(f"no submit after {MAX_TURNS} model turns")

    def _client(self) -> openai.OpenAI:
        endpoint = self.config.endpoint(self.role)
        return openai.OpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key or "none",
            max_retries=endpoint.max_retries,
            timeout=self.config.budget.call_timeout_s,
        )

    def _call(self, client: openai.OpenAI, messages: list[Any], transcript: Transcript):
        endpoint = self.config.endpoint(self.role)
        tools = schemas.specs(self.role)
        request = {"base_url": endpoint.base_url, "model": endpoint.model, "messages": messages, "tools": tools}
        transcript.write("request", request)
        try:
            response = client.chat.completions.create(model=endpoint.model, messages=messages, tools=tools)
        except openai.OpenAIError as e:
            problem = self._failure(e)
            transcript.write("error", {"error": problem})
            raise RoleError(transcript.redact(problem)) from e
        transcript.write("response", response.model_dump())
        tokens_in = response.usage.prompt_tokens if response.usage else 0
        tokens_out = response.usage.completion_tokens if response.usage else 0
        cost = self.config.cost(endpoint.model, tokens_in, tokens_out)
        self.run.store.add_usage(self.run.id, self.n, self.role, 1, tokens_in, tokens_out, 0.0, cost)
        message = response.choices[0].message if response.choices else None
        if message is None or not (message.content or message.tool_calls):
            raise RoleError("the model returned an empty reply")
        if not message.tool_calls:
            said = " ".join((message.content or "").split())[:200]
            raise RoleError(f"the model stopped without calling submit; it said: {said}")
        return message

    def _failure(self, error: openai.OpenAIError) -> str:
        endpoint = self.config.endpoint(self.role)
        tries = f"{endpoint.max_retries + 1} tries"
        if isinstance(error, openai.APITimeoutError):
            return f"the LLM call timed out after {self.config.budget.call_timeout_s:g} s ({tries})"
        if isinstance(error, openai.APIStatusError):
            said = str(error.body.get("message") if isinstance(error.body, dict) else error)[:300]
            return f"the LLM endpoint answered HTTP {error.status_code} ({tries}): {said}"
        if isinstance(error, openai.APIConnectionError):
            return f"cannot reach the LLM endpoint {endpoint.base_url} ({tries})"
        return f"the LLM call failed: {error}"

    def _dispatch(self, tools: Toolbox, name: str, arguments: str) -> dict | tuple[str, bool]:
        """The submit arguments when they are valid; otherwise the tool's answer and whether the call was valid."""
        schema = schemas.schema(self.role, name)
        if schema is None:
            known = ", ".join(s["function"]["name"] for s in schemas.specs(self.role))
            return f"error: unknown tool '{name}' (tools: {known})", False
        try:
            args = json.loads(arguments or "{}")
        except json.JSONDecodeError as e:
            return f"error: the arguments are not valid JSON ({e}); send one JSON object", False
        if not isinstance(args, dict):
            return "error: the arguments must be one JSON object", False
        problems = [_where(e) for e in jsonschema.Draft202012Validator(schema).iter_errors(args)]
        if problems:
            return "error: invalid arguments: " + "; ".join(sorted(problems)), False
        if name == "submit":
            problem = self.check(args) if self.check else None
            return (f"error: {problem}", False) if problem else args
        try:
            return tools.call(name, args), True
        except ToolError as e:
            return f"error: {e}", True


def _where(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"{path or 'arguments'}: {error.message}"
