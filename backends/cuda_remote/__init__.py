from backends.cuda_remote.executor import RemoteExecutor as Executor

__all__ = ["Executor"]
