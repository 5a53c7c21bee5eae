from backends.cuda_remote.executor import RemoteExecutor as Executor
from backends.hf import prepare_model

__all__ = ["Executor", "prepare_model"]
