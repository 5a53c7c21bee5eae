"""This machine, for torch stacks: the model is prepared as a Hugging Face folder."""

from backends.hf import prepare_model
from backends.local.executor import TorchExecutor as Executor

__all__ = ["Executor", "prepare_model"]
