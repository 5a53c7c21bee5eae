import shutil
from pathlib import Path

import git

AUTHOR = git.Actor("atelier", "atelier@localhost")
IGNORED = "__pycache__/\n*.pyc\n.atelier-scratch/\n"


class Workspace:
    """The candidate stack as a git repository: accepted rounds are commits on the run's branch."""

    def __init__(self, path: Path, branch: str):
        self.path = path
        self.branch = branch
        self.repo = git.Repo(path)

    @classmethod
    def create(cls, path: Path, seed: Path, branch: str) -> "Workspace":
        shutil.copytree(seed, path, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (path / ".gitignore").write_text(IGNORED)
        repo = git.Repo.init(path, initial_branch=branch)
        with repo.config_writer() as config:
            config.set_value("user", "name", AUTHOR.name)
            config.set_value("user", "email", AUTHOR.email)
        repo.git.add(A=True)
        repo.index.commit("seed", author=AUTHOR, committer=AUTHOR)
        return cls(path, branch)

    @property
    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def diff(self) -> str:
        self.repo.git.add(A=True)
        return self.repo.git.diff("--cached", "HEAD")

    def changed(self) -> bool:
        return bool(self.repo.git.status("--porcelain"))

    def commit(self, message: str) -> str:
        self.repo.git.add(A=True)
        return self.repo.index.commit(message, author=AUTHOR, committer=AUTHOR).hexsha

    def reject(self, round_n: int, message: str, back_to: str) -> str | None:
        """Keep the candidate under refs/atelier/rejected/<round>, then return to `back_to`."""
        sha = None
        if self.changed():
            self.repo.git.add(A=True)
            tree = self.repo.index.write_tree()
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
        """Branch and files back at `commit`, nothing untracked left over."""
        self.repo.git.checkout("-f", self.branch)
        self.repo.git.reset("--hard", commit)
        self.repo.git.clean("-fdx")

    def rejected(self) -> list[str]:
        return sorted(r.path for r in self.repo.refs if r.path.startswith("refs/atelier/rejected/"))

    def export(self, commit: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for blob in self.repo.commit(commit).tree.traverse():
            if blob.type == "blob":  # type: ignore[union-attr]
                out = dest / blob.path  # type: ignore[union-attr]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(blob.data_stream.read())  # type: ignore[union-attr]
                out.chmod(blob.mode & 0o777)  # type: ignore[union-attr]
