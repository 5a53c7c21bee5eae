"""What a confined command may read, write and reach: one allow-list, rendered for bubblewrap on Linux
(backends/bwrap.py) and as a Seatbelt profile on macOS (backends/seatbelt.py), so the two cannot drift."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    """workspace and writable are writable but their frozen parts; the command reads the toolchain, readable and
    its writable paths, or everything when whole (the harness), masked paths excepted when not whole; scratch is
    its private temporary folder; no network unless network (loopback stays usable)."""

    workspace: str
    writable: tuple[str, ...] = ()
    readable: tuple[str, ...] = ()
    toolchain: tuple[str, ...] = ()
    masked_files: tuple[str, ...] = ()
    masked_dirs: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    whole: bool = False
    network: bool = False
    scratch: str = "/tmp"

    @property
    def writes(self) -> tuple[str, ...]:
        return (self.workspace, *self.writable)

    @property
    def reads(self) -> tuple[str, ...]:
        """What is readable besides the writable paths; empty when the whole file system is."""
        return () if self.whole else (*self.toolchain, *self.readable)

    @property
    def masked(self) -> tuple[str, ...]:
        return (*self.masked_files, *self.masked_dirs)
