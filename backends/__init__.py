import importlib

from backends.executor import CommandResult, Executor


def executor(kind: str, **options) -> Executor:
    """The executor of a target's kind: `backends.<kind>` exports a class named Executor."""
    return importlib.import_module(f"backends.{kind}").Executor(**options)


__all__ = ["CommandResult", "Executor", "executor"]
