"""The allow-list as a Seatbelt profile (macOS `sandbox-exec -p`): deny by default, then exactly the spec's
reads, writes and network, every path given as a resolved literal. Metal's compiler service and GPU user clients
are allowed so that MLX runs on the GPU; the loopback is the host's (there is no private network namespace)."""

from backends.allowlist import Spec

SANDBOX_EXEC = "/usr/bin/sandbox-exec"
DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/tty", "/dev/dtracehelper")
DEVICES_READ = ("/dev/random", "/dev/urandom")
METAL_SERVICES = ("com.apple.MTLCompilerService", "com.apple.CoreServices.coreservicesd")
GPU_CLIENTS = ("AGXDeviceUserClient", "AGXSharedUserClient", "IOSurfaceRootUserClient", "IOAccelerator")


def profile(spec: Spec) -> str:
    rules = ["(version 1)", "(deny default)", *_processes(spec), *_files(spec), *_devices(), *_gpu(), *_network(spec)]
    return "\n".join(rules) + "\n"


def command(spec: Spec, argv: list[str]) -> list[str]:
    return [SANDBOX_EXEC, "-p", profile(spec), *argv]


def _processes(spec: Spec) -> list[str]:
    exec_rule = "(allow process-exec)" if spec.whole else f"(allow process-exec {_readable(spec)})"
    return [
        "(allow process-fork)",
        exec_rule,
        "(allow signal (target same-sandbox))",
        "(allow process-info* (target same-sandbox))",
        "(allow sysctl-read)",
    ]


def _files(spec: Spec) -> list[str]:
    writes = _except(_any(spec.writes + (spec.scratch,)), spec.frozen)
    return [
        "(allow file-read-metadata)",
        "(allow file-read*)" if spec.whole else f"(allow file-read* {_readable(spec)})",
        f"(allow file-write* {writes})",
    ]


def _readable(spec: Spec) -> str:
    return _except(_any(spec.reads + spec.writes + (spec.scratch,)), spec.masked)


def _devices() -> list[str]:
    return [f"(allow file-read* file-write-data file-ioctl {_literals(DEVICES_RW)})",
            f"(allow file-read* {_literals(DEVICES_READ)})"]  # fmt: skip


def _gpu() -> list[str]:
    services = " ".join(f"(global-name {_string(s)})" for s in METAL_SERVICES)
    clients = " ".join(_string(c) for c in GPU_CLIENTS)
    return [f"(allow mach-lookup {services})", f"(allow iokit-open (iokit-user-client-class {clients}))"]


def _network(spec: Spec) -> list[str]:
    if spec.network:
        return ["(allow network*)"]
    return [
        '(allow network-bind network-inbound (local ip "localhost:*"))',
        '(allow network-outbound (remote ip "localhost:*"))',
    ]


def _any(paths: tuple[str, ...]) -> str:
    return "(require-any " + " ".join(f"(subpath {_string(p)})" for p in paths) + ")"


def _except(allowed: str, denied: tuple[str, ...]) -> str:
    return f"(require-all {allowed} (require-not {_any(denied)}))" if denied else allowed


def _literals(paths: tuple[str, ...]) -> str:
    return " ".join(f"(literal {_string(p)})" for p in paths)


def _string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
