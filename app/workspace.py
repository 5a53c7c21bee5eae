import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git

AUTHOR = git.Actor("atelier", "atelier@localhost")
IGNORED = "__pycache__/\n*.pyc\n.atelier-scratch/\n"
# Atelier's own git never runs code a candidate could have planted: no hooks, no fsmonitor, no submodules.
HARDENED = [
    "core.fsmonitor=false", "core.hooksPath=/dev/null", "core.untrackedCache=false", "submodule.recurse=false",
    "status.submoduleSummary=false", "diff.ignoreSubmodules=all", "core.symlinks=true",
]  # fmt: skip
COMPILED = (".pyc", ".pyo")
LINK = 0o120000


class SnapshotError(Exception):
    """The candidate cannot be frozen as it is (a nested repository, compiled files, a link leaving it)."""


@dataclass(frozen=True)
class Snapshot:
    """A candidate frozen as the read-only tree of its tracked files, named by its git tree hash."""

    tree: str
    path: Path


class Workspace:
    """The candidate stack as a git repository: accepted rounds are commits on the run's branch."""

    def __init__(self, path: Path, branch: str):
        self.path = path
        self.branch = branch
        self.repo = git.Repo(path)
        self.repo.git.set_persistent_git_options(c=HARDENED)
        self.repo.git.update_environment(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")

    @classmethod
    def create(cls, path: Path, seed: Path, branch: str) -> "Workspace":
        shutil.copytree(seed, path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (path / ".gitignore").write_text(IGNORED)
        repo = git.Repo.init(path, initial_branch=branch)
        with repo.config_writer() as config:
            config.set_value("user", "name", AUTHOR.name)
            config.set_value("user", "email", AUTHOR.email)
        workspace = cls(path, branch)
        workspace.commit_tree(workspace.stage(), "seed", parents=[])
        return workspace

    @property
    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def tree_of(self, commit: str) -> str:
        return self.repo.commit(commit).tree.hexsha

    def nested(self) -> list[str]:
        """Repositories inside the workspace (a `.git` anywhere but at its root)."""
        found = []
        for folder, dirs, files in os.walk(self.path):
            here = Path(folder)
            for name in [*dirs, *files]:
                if name == ".git" and here != self.path:
                    found.append(str((here / name).relative_to(self.path)))
            dirs[:] = [d for d in dirs if not (d == ".git" and here == self.path)]
        return found

    def stage(self) -> str:
        """Every file of the candidate into the index, checked; the tree hash it makes."""
        nested = self.nested()
        if nested:
            raise SnapshotError(f"a nested git repository is not allowed in a candidate: {', '.join(nested[:3])}")
        self.repo.git.add(A=True)
        tree = self.repo.git.write_tree()
        problems = self.refused(tree)
        if problems:
            raise SnapshotError("; ".join(problems[:5]))
        return tree

    def refused(self, tree: str) -> list[str]:
        problems = []
        for line in self.repo.git.ls_tree("-r", "--full-tree", tree).splitlines():
            meta, name = line.split("\t", 1)
            mode, kind, sha = meta.split()
            path = PurePosixPath(name)
            if kind == "commit":
                problems.append(f"{name}: a submodule is not allowed in a candidate")
            elif path.suffix in COMPILED or "__pycache__" in path.parts:
                problems.append(f"{name}: compiled Python is not allowed in a candidate (it runs from source)")
            elif int(mode, 8) == LINK and not _inside(path, self.repo.git.cat_file("blob", sha)):
                problems.append(f"{name}: a link leaving the candidate is not allowed")
        return problems

    def snapshot(self, tree: str, root: Path) -> Snapshot:
        """The tree as a read-only folder root/<tree>, written once."""
        dest = root / tree
        if not dest.exists():
            partial = root / f"{tree}.partial"
            _remove(partial)
            self.write_tree(tree, partial)
            _freeze(partial)
            partial.rename(dest)
        return Snapshot(tree, dest)

    def changed(self) -> bool:
        return self.stage() != self.tree_of(self.head)

    def diff(self, tree: str | None = None) -> str:
        """From HEAD to tree (default: the files as they are now)."""
        return self.repo.git.diff(self.head, tree or self.stage())

    def commit_tree(self, tree: str, message: str, parents: list[str] | None = None) -> str:
        """A commit of tree (default parent: HEAD) at the tip of the run's branch, the files as it says."""
        parents = [self.head] if parents is None else parents
        args = [tree, *(arg for p in parents for arg in ("-p", p)), "-m", message]
        env = {"GIT_AUTHOR_NAME": AUTHOR.name, "GIT_AUTHOR_EMAIL": AUTHOR.email}
        env |= {"GIT_COMMITTER_NAME": AUTHOR.name, "GIT_COMMITTER_EMAIL": AUTHOR.email}
        sha = self.repo.git.commit_tree(*args, env=env)
        self.repo.git.update_ref(f"refs/heads/{self.branch}", sha)
        self.reset(sha)
        return sha

    def commit(self, message: str) -> str:
        return self.commit_tree(self.stage(), message)

    def reject(self, round_n: int, message: str, back_to: str, tree: str | None = None) -> str | None:
        """Keep the candidate (tree, else the files as they are) under refs/atelier/rejected/<round>, then return
        to `back_to`."""
        sha = None
        try:
            tree = tree or self.stage()
        except SnapshotError:
            tree = None
        if tree and tree != self.tree_of(back_to):
            parent = self.repo.commit(back_to)
            commit = git.Commit.create_from_tree(self.repo, tree, message, [parent], False, AUTHOR, AUTHOR)
            sha = self.keep("rejected", round_n, commit.hexsha)
        self.reset(back_to)
        return sha

    def keep(self, kind: str, round_n: int, commit: str) -> str:
        """A round's commit under refs/atelier/<kind>/<round>, reachable whatever the branch does."""
        git.Reference.create(self.repo, f"refs/atelier/{kind}/{round_n}", commit, force=True)
        return commit

    @property
    def root(self) -> str:
        """The seed commit."""
        return self.repo.git.rev_list("--max-parents=0", self.branch).split()[0]

    def reset(self, commit: str) -> None:
        """Branch and files back at `commit`, nothing untracked left over (nested repositories included)."""
        for name in self.nested():
            _remove(self.path / name)
        self.repo.git.checkout("-f", self.branch)
        self.repo.git.reset("--hard", commit)
        self.repo.git.clean("-ffdx")

    def rejected(self) -> list[str]:
        return sorted(r.path for r in self.repo.refs if r.path.startswith("refs/atelier/rejected/"))

    def export(self, commit: str, dest: Path) -> None:
        self.write_tree(self.tree_of(commit), dest)

    def write_tree(self, tree: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as archive:
            self.repo.archive(archive, treeish=tree, format="tar")
            archive.seek(0)
            with tarfile.open(fileobj=archive) as tar:
                tar.extractall(dest, filter="data")


def _inside(link: PurePosixPath, target: str) -> bool:
    if target.startswith("/"):
        return False
    depth = len(link.parts) - 1
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def _freeze(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _remove(path: Path) -> None:
    """A folder (or file) gone, read-only parts included."""
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    for folder, _, _ in os.walk(path):
        os.chmod(folder, 0o755)
    shutil.rmtree(path, ignore_errors=True)
