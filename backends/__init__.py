import importlib

from backends.executor import CommandResult, Executor


def executor(spec: str) -> Executor:
    """The executor a target names, `KIND` or `KIND:NAME`: `backends.<kind>` exports a class named Executor."""
    kind, _, name = spec.partition(":")
    cls = importlib.import_module(f"backends.{kind}").Executor
    return cls(name) if name else cls()


__all__ = ["CommandResult", "Executor", "executor"]
