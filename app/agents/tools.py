"""What an agent can do: files inside its workspace only, a command through the run's executor, the skills."""

import re
from dataclasses import dataclass
from pathlib import Path

from app import skills
from app.evaluator import profile
from app.run import ActiveRun
from backends.executor import Sandbox
from backends.sandbox import SandboxError

MAX_OUTPUT = 12_000
READ_LINES = 400
MAX_HITS = 200
COMMAND_TIMEOUT_S = 120.0


class ToolError(Exception):
    pass


@dataclass
class Toolbox:
    run: ActiveRun
    root: Path
    n: int = 0

    def call(self, name: str, args: dict) -> str:
        return getattr(self, f"tool_{name}")(**args)

    def tool_list(self, path: str = ".") -> str:
        folder = self.inside(path)
        if not folder.is_dir():
            raise ToolError(f"{path}: not a folder")
        names = [str(p.relative_to(self.root.resolve())) for p in sorted(folder.rglob("*")) if self.visible(p)]
        return cut("\n".join(names) or "(empty)")

    def tool_read(self, path: str, offset: int = 1, limit: int = READ_LINES) -> str:
        lines = self.text(path).splitlines()
        shown = [f"{i:>5}  {line}" for i, line in enumerate(lines[offset - 1 : offset - 1 + limit], offset)]
        rest = len(lines) - (offset - 1 + limit)
        more = [f"[{rest} more lines: read with offset {offset + limit}]"] if rest > 0 else []
        return cut("\n".join(shown + more) or "(empty file)")

    def tool_write(self, path: str, content: str) -> str:
        file = self.inside(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content)
        return f"wrote {path} ({len(content.splitlines())} lines)"

    def tool_edit(self, path: str, old: str, new: str) -> str:
        text = self.text(path)
        count = text.count(old)
        if count != 1:
            raise ToolError(f"{path}: old text found {count} times; it must match exactly once")
        self.inside(path).write_text(text.replace(old, new))
        return f"edited {path}"

    def tool_search(self, pattern: str, path: str = ".") -> str:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ToolError(f"bad regular expression: {e}") from e
        where = self.inside(path)
        files = [where] if where.is_file() else [p for p in sorted(where.rglob("*")) if p.is_file() and self.visible(p)]
        hits = []
        for file in files:
            try:
                lines = file.read_text().splitlines()
            except (UnicodeDecodeError, OSError):
                continue
            name = file.relative_to(self.root.resolve())
            hits += [f"{name}:{i}: {line}" for i, line in enumerate(lines, 1) if regex.search(line)]
        more = [f"[{len(hits) - MAX_HITS} more matches]"] if len(hits) > MAX_HITS else []
        return cut("\n".join(hits[:MAX_HITS] + more) or "no match")

    def tool_run(self, command: str, timeout_s: float = COMMAND_TIMEOUT_S) -> str:
        try:
            sandbox = Sandbox(self.root, readable=self.shown())
            result = self.run.executor.run(["bash", "-c", command], self.root, timeout_s, sandbox=sandbox)
        except SandboxError as e:
            raise ToolError(f"commands cannot run: {e}") from e
        status = f"timed out after {timeout_s:g} s" if result.timed_out else f"exit code {result.exit_code}"
        return f"{status}\n{cut(result.output)}"

    def tool_profile(self) -> str:
        found, saved = profile(self.run, self.n, self.root)
        return f"{found.tool} (saved as {saved}):\n{cut(found.summary)}"

    def shown(self) -> tuple[Path, ...]:
        """What an agent's commands see besides the workspace and the toolchain: the read-only inputs and the
        models; never the cache's reference outputs, the hidden inputs, the store, other runs or the home folder."""
        run = self.run
        return tuple(p for p in (run.dir / "readonly", run.model, run.draft) if p and p.exists())

    def tool_list_skills(self) -> str:
        return "\n".join(f"{s.name} ({s.layer}): {s.description}" for s in self.skills()) or "no skills"

    def tool_read_skill(self, name: str) -> str:
        for skill in self.skills():
            if skill.name == name:
                return cut(skill.body)
        raise ToolError(f"no skill '{name}' for this target's backend (see list_skills)")

    def skills(self) -> list[skills.Skill]:
        backend = "mlx" if self.run.target.executor == "mlx" else "cuda"
        return skills.skills_for(backend, skills.load_skills())

    def inside(self, path: str) -> Path:
        root = self.root.resolve()
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(root):
            raise ToolError(f"{path}: outside the workspace; only files under it can be used")
        if ".git" in resolved.relative_to(root).parts:
            raise ToolError(f"{path}: the workspace's git folder is not for agents")
        return resolved

    def text(self, path: str) -> str:
        file = self.inside(path)
        if not file.is_file():
            raise ToolError(f"{path}: no such file")
        try:
            return file.read_text()
        except UnicodeDecodeError as e:
            raise ToolError(f"{path}: not a text file") from e

    def visible(self, path: Path) -> bool:
        root = self.root.resolve()
        parts = path.relative_to(root).parts
        inside = path.resolve().is_relative_to(root)
        return inside and ".git" not in parts and "__pycache__" not in parts and path.is_file()


def cut(text: str, limit: int = MAX_OUTPUT) -> str:
    """The tail of long output, with a note saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"[output cut: the first {len(text) - limit} of {len(text)} characters dropped]\n{text[-limit:]}"
