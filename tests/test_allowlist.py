"""One allow-list, two renderings: bubblewrap's arguments and a Seatbelt profile say the same reads, writes and
network, and nothing more. The profile is parsed back as s-expressions, never matched as text."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backends import bwrap, sandbox, seatbelt
from backends.allowlist import Spec
from backends.executor import Sandbox

CANDIDATE = Spec(
    workspace="/runs/r1/calls/abc",
    writable=("/runs/r1/cache",),
    readable=("/models/m", "/venv", '/odd "quoted" \\ path'),
    toolchain=("/usr", "/bin"),
    masked_files=("/etc/shadow",),
    masked_dirs=("/etc/ssh",),
    frozen=("/runs/r1/calls/abc/.git",),
    scratch="/private/tmp/atelier-scratch-1",
)
HARNESS = Spec(workspace="/runs/r1/calls/abc", writable=("/runs/r1/cache",), whole=True, scratch="/tmp")
TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()"]+')


def parse(text: str) -> list:
    """The profile's top-level forms; strings come back unquoted, as ('str', value)."""
    stack: list[list] = [[]]
    for token in TOKEN.findall(text):
        if token == "(":
            stack.append([])
        elif token == ")":
            done = stack.pop()
            stack[-1].append(done)
        elif token.startswith('"'):
            stack[-1].append(("str", re.sub(r"\\(.)", r"\1", token[1:-1])))
        else:
            stack[-1].append(token)
    assert len(stack) == 1, "unbalanced parentheses"
    return stack[0]


def rules(spec: Spec) -> list[list]:
    forms = parse(seatbelt.profile(spec))
    assert forms[:2] == [["version", "1"], ["deny", "default"]]
    return forms[2:]


def allowing(forms: list[list], operation: str) -> list[list]:
    return [f for f in forms if f[0] == "allow" and operation in f[1:]]


def strings(form, kind: str) -> set[str]:
    """Every path given to `kind` (subpath, literal) inside form, outside any require-not."""
    if not isinstance(form, list) or (form and form[0] == "require-not"):
        return set()
    if form and form[0] == kind:
        return {form[1][1]}
    return set().union(*(strings(f, kind) for f in form))


def denied(form) -> set[str]:
    if not isinstance(form, list):
        return set()
    if form and form[0] == "require-not":
        return strings(form[1], "subpath")
    return set().union(*(denied(f) for f in form))


def test_the_profile_denies_by_default_and_allows_exactly_the_specs_paths():
    forms = rules(CANDIDATE)
    assert not [f for f in forms if f[0] == "allow" and len(f) == 2 and f[1] in ("default", "file-read*")]
    [write] = allowing(forms, "file-write*")
    assert strings(write, "subpath") == {CANDIDATE.workspace, *CANDIDATE.writable, CANDIDATE.scratch}
    assert denied(write) == set(CANDIDATE.frozen)
    [read] = [f for f in allowing(forms, "file-read*") if strings(f, "subpath")]
    assert strings(read, "subpath") == {*CANDIDATE.reads, *CANDIDATE.writes, CANDIDATE.scratch}
    assert '/odd "quoted" \\ path' in strings(read, "subpath")
    assert denied(read) == set(CANDIDATE.masked)
    everywhere = set().union(*(strings(f, "subpath") | strings(f, "literal") for f in forms))
    devices = set(seatbelt.DEVICES_RW + seatbelt.DEVICES_READ)
    assert everywhere - devices == {*CANDIDATE.reads, *CANDIDATE.writes, CANDIDATE.scratch}


def test_without_network_only_the_loopback_is_reachable():
    forms = rules(CANDIDATE)
    network = [f for f in forms if f[0] == "allow" and any(str(op).startswith("network") for op in f[1:])]
    assert network and all(("str", "localhost:*") in f[-1] for f in network), network
    assert ["allow", "network*"] not in forms
    assert ["allow", "network*"] in rules(Spec(**{**CANDIDATE.__dict__, "network": True}))


def test_the_harness_reads_everything_but_writes_only_its_folders():
    forms = rules(HARNESS)
    assert ["allow", "file-read*"] in forms and ["allow", "process-exec"] in forms
    [write] = allowing(forms, "file-write*")
    assert strings(write, "subpath") == {HARNESS.workspace, *HARNESS.writable, HARNESS.scratch}


def test_bubblewrap_renders_the_same_spec():
    argv = bwrap.arguments(CANDIDATE)
    pairs = list(zip(argv, argv[1:], argv[2:], strict=False))
    assert {b for a, b, c in pairs if a == "--bind" and b == c} == set(CANDIDATE.writes)
    assert {b for a, b, c in pairs if a == "--ro-bind" and b == c} == {*CANDIDATE.readable, *CANDIDATE.frozen}
    assert {b for a, b, c in pairs if a == "--ro-bind-try"} == set(CANDIDATE.toolchain)
    assert ("--ro-bind", "/dev/null", "/etc/shadow") in pairs and ("--tmpfs", "/etc/ssh") in set(
        zip(argv, argv[1:], strict=False)
    )
    assert argv.index("--bind") < argv.index(CANDIDATE.frozen[0]), "frozen paths are bound over the writable ones"
    assert "--unshare-net" in argv and "--unshare-net" not in bwrap.arguments(Spec(**{**CANDIDATE.__dict__,
                                                                                      "network": True}))  # fmt: skip
    assert bwrap.arguments(HARNESS)[1:4] == ["--ro-bind", "/", "/"]


def test_a_candidates_spec_here_names_no_secret_and_no_home(tmp_path):
    (tmp_path / "ws" / ".git").mkdir(parents=True)
    found = sandbox.spec(Sandbox(tmp_path / "ws", readable=(tmp_path / "model",)))
    assert found.frozen == (str(tmp_path / "ws" / ".git"),) and not found.whole and not found.network
    named = {*found.reads, *found.writes} - {str(p) for p in sandbox.interpreter()}
    home = str(Path.home())
    assert not [p for p in named if p == home or p.startswith(home + "/.")], named
    assert not [p for p in named if ".ssh" in p or "atelier" in Path(p).name.lower()], named


@pytest.mark.skipif(sys.platform != "darwin", reason="Seatbelt runs on macOS only")
def test_seatbelt_confines_a_candidate_on_macos(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    secret = Path.home() / ".ssh"
    code = (
        "import os, socket, sys\n"
        "open('ok.txt', 'w').write('ok')\n"
        f"for path in ({str(secret)!r}, {str(tmp_path / 'outside.txt')!r}):\n"
        "    try:\n        open(path if path.endswith('.txt') else os.path.join(path, 'x'), 'w')\n"
        "    except OSError:\n        pass\n    else:\n        sys.exit('escaped: ' + path)\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=3)\nexcept OSError:\n    pass\n"
        "else:\n    sys.exit('network reached')\n"
    )
    argv = sandbox.wrap([sys.executable, "-c", code], Sandbox(workspace))
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=sandbox.confined_env(Sandbox(workspace))
    )
    assert result.returncode == 0, result.stderr
    assert (workspace / "ok.txt").read_text() == "ok" and not (tmp_path / "outside.txt").exists()
    assert os.environ.get("HOME") != sandbox.confined_env(Sandbox(workspace))["HOME"]
