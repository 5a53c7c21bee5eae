"""The json-tiny JSON-schema suite: case files, prompts, schemas and feature coverage (no model runs)."""

import importlib.util
import json
import re

import pytest

from conftest import TARGET

SCHEMAS = TARGET / "schemas"
MAX_TOKENS = 128
FORMATS = {"date", "date-time", "email", "uri", "uuid", "ipv4"}
FEATURES = (
    "flat",
    "nested-3",
    "array",
    "array-of-objects",
    "enum",
    "const",
    "pattern",
    "format",
    "minimum-maximum",
    "exclusiveMinimum",
    "integer",
    "number",
    "anyOf",
    "oneOf",
    "$ref",
    "function-call",
    "tool-choice",
    "nullable",
)


def load_workload():
    spec = importlib.util.spec_from_file_location("json_tiny_workload", TARGET / "workload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


workload = load_workload()
CASES = workload.load_cases(SCHEMAS)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def node_ref_parts(ref: str) -> list[str]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local refs are expected, got {ref!r}")
    return ref[2:].split("/")


def deref(node, root: dict):
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        seen += 1
        if seen > 10:
            raise ValueError("ref cycle")
        target = root
        for part in node_ref_parts(node["$ref"]):
            target = target[part]
        node = target
    return node


def subschemas(node):
    """Every schema directly inside node (properties, items, combinators, defs)."""
    if not isinstance(node, dict):
        return
    for key in ("properties", "$defs", "definitions"):
        yield from node.get(key, {}).values()
    if isinstance(node.get("items"), dict):
        yield node["items"]
    for key in ("anyOf", "oneOf", "allOf"):
        yield from node.get(key, [])


def walk(node):
    if isinstance(node, dict):
        yield node
        for child in subschemas(node):
            yield from walk(child)


def is_object(node) -> bool:
    return isinstance(node, dict) and (node.get("type") == "object" or "properties" in node)


def object_depth(node, root: dict) -> int:
    """How many object levels nest below (and including) node, following refs."""
    node = deref(node, root)
    if not isinstance(node, dict):
        return 0
    children = [object_depth(child, root) for child in subschemas(node) if child is not node]
    below = max(children, default=0)
    return below + 1 if is_object(node) else below


def tool_name(node, root: dict) -> str | None:
    """The tool name if node is an OpenAI-style call: {"name": {"const": ...}, "arguments": {object}}."""
    node = deref(node, root)
    if not is_object(node):
        return None
    props = node.get("properties", {})
    if set(props) != {"name", "arguments"} or set(node.get("required", [])) != {"name", "arguments"}:
        return None
    name, arguments = props["name"], deref(props["arguments"], root)
    if not isinstance(name.get("const"), str) or not is_object(arguments):
        return None
    return name["const"]


def is_flat(node, root: dict) -> bool:
    """An object of scalar properties, all required, no others allowed."""
    props = node.get("properties", {})
    return (
        is_object(node)
        and bool(props)
        and node.get("additionalProperties") is False
        and set(node.get("required", [])) == set(props)
        and not any(object_depth(child, root) or "array" in types_of(child) for child in props.values())
    )


def types_of(node) -> set[str]:
    kind = node.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if kind else set()


def features(schema: dict) -> set[str]:
    found = set()
    if is_flat(deref(schema, schema), schema):
        found.add("flat")
    if object_depth(schema, schema) >= 3:
        found.add("nested-3")
    if tool_name(schema, schema):
        found.add("function-call")
    for node in walk(schema):
        kinds = types_of(node)
        if "array" in kinds and "minItems" in node and "maxItems" in node:
            found.add("array")
            if is_object(deref(node.get("items"), schema)):
                found.add("array-of-objects")
        for key in ("enum", "const", "pattern", "anyOf", "oneOf", "$ref", "exclusiveMinimum"):
            if key in node:
                found.add(key)
        if node.get("format") in FORMATS:
            found.add("format")
        if "minimum" in node and "maximum" in node:
            found.add("minimum-maximum")
        found |= kinds & {"integer", "number"}
        if "null" in kinds and len(kinds) > 1:
            found.add("nullable")
        names = {tool_name(branch, schema) for branch in node.get("oneOf", [])}
        if len(node.get("oneOf", [])) >= 2 and None not in names and len(names) == len(node["oneOf"]):
            found.add("tool-choice")
            found.add("function-call")
    return found


def test_suite_is_24_numbered_cases():
    assert [case.name[:3] for case in CASES] == [f"{i:02d}-" for i in range(1, 25)]
    for case in CASES:
        assert re.fullmatch(r"\d\d-[a-z0-9]+(-[a-z0-9]+)*", case.name), case.name
        raw = json.loads((SCHEMAS / f"{case.name}.json").read_text())
        assert list(raw) == ["messages", "prompt", "schema", "max_tokens"], case.name


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case_has_a_short_request_and_the_token_budget(case):
    assert case.max_tokens == MAX_TOKENS
    assert [message["role"] for message in case.messages] == ["system", "user"]
    request = case.messages[1]["content"]
    assert 20 <= len(request) <= 200, request
    assert 1 <= len(re.findall(r"[.?!](\s|$)", request)) <= 3, request


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_case_prompt_is_rendered_from_messages_for(case, tokenizer):
    request = case.messages[1]["content"]
    assert case.messages == workload.messages_for(case.schema, request)
    assert case.prompt == workload.render(tokenizer, workload.messages_for(case.schema, request))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_schema_is_valid_and_compiles_with_xgrammar(case, tokenizer):
    import jsonschema
    import xgrammar as xgr

    jsonschema.validators.validator_for(case.schema).check_schema(case.schema)
    compiler = compiler_for(tokenizer)
    compiled = compiler.compile_json_schema(json.dumps(case.schema), any_whitespace=False, separators=(",", ":"))
    assert isinstance(compiled, xgr.CompiledGrammar)


COMPILERS: dict = {}


def compiler_for(tokenizer):
    import xgrammar as xgr

    if id(tokenizer) not in COMPILERS:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=49152)
        COMPILERS[id(tokenizer)] = xgr.GrammarCompiler(info)
    return COMPILERS[id(tokenizer)]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_schema_bounds_its_output(case):
    """Strings and arrays are bounded in ways xgrammar enforces, so greedy output stays well under max_tokens."""
    for node in walk(case.schema):
        kinds = types_of(node)
        if "string" in kinds and not {"enum", "const"} & set(node):
            if "pattern" in node or "format" in node:
                # xgrammar ignores maxLength next to pattern or format; the pattern itself must be bounded.
                assert "maxLength" not in node, node
                assert not re.search(r"(?<!\\)[+*]", node.get("pattern", "")), node
            else:
                assert node.get("maxLength", 10**9) <= 64, node
        if "array" in kinds:
            assert node.get("maxItems", 10**9) <= 5, node
        if is_object(node):
            assert node.get("additionalProperties") is False, node


def test_suite_covers_each_feature_at_least_twice():
    counts = {feature: 0 for feature in FEATURES}
    for case in CASES:
        for feature in features(case.schema):
            counts[feature] = counts.get(feature, 0) + 1
    assert {feature: n for feature, n in counts.items() if n < 2} == {}


def test_suite_uses_each_supported_format():
    used = {node["format"] for case in CASES for node in walk(case.schema) if "format" in node}
    assert used == FORMATS


def test_suite_uses_defs_and_definitions():
    assert sum("$defs" in case.schema for case in CASES) >= 2
    assert any("definitions" in case.schema for case in CASES)


def test_feature_walker_finds_features_and_nothing_else():
    plain = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert features(plain) == set()
    flat = {**plain, "required": ["a"], "additionalProperties": False}
    assert features(flat) == {"flat"}
    assert "flat" not in features({**flat, "properties": {"a": plain}})
    assert "flat" not in features({**flat, "properties": {"a": {"anyOf": [plain, {"type": "null"}]}}})
    call = {
        "type": "object",
        "properties": {"name": {"const": "f"}, "arguments": {"type": "object", "properties": {}}},
        "required": ["name", "arguments"],
    }
    other = json.loads(json.dumps(call).replace('"f"', '"g"'))
    assert {"function-call", "const"} <= features(call)
    assert "tool-choice" in features({"oneOf": [call, other]})
    assert "tool-choice" not in features({"oneOf": [call, call]})
    deep = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": plain}}}}
    assert object_depth(deep, deep) == 3 and "nested-3" in features(deep)
    assert object_depth({"type": "object", "properties": {"b": plain}}, {}) == 2
    nullable = {"type": ["string", "null"]}
    assert features(nullable) == {"nullable"}
    refd = {"$defs": {"p": plain}, "type": "array", "items": {"$ref": "#/$defs/p"}, "minItems": 1, "maxItems": 2}
    assert features(refd) == {"array", "array-of-objects", "$ref"}
