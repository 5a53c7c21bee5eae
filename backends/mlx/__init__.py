from backends.mlx.executor import LocalExecutor as Executor
from backends.mlx.model import prepare_model

__all__ = ["Executor", "prepare_model"]
