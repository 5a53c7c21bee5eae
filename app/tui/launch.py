"""The launch form: a bundled or local target validated as you type, policy and budgets; start runs
`python -m app run …` in its own session, so it survives closing the TUI."""

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from app import policies, target
from app.model import ModelError, locate
from app.tui import data

LIMITS = (("max_rounds", "max rounds", "12"), ("max_minutes", "max minutes", "60"), ("plateau", "plateau", "4"))


def problems(name_or_path: str) -> tuple[list[str], str]:
    """The same problems `atelier validate` prints, and a one-line description when there are none."""
    if not name_or_path.strip():
        return ["pick a bundled target or type a folder with a target.toml"], ""
    try:
        path = target.find(name_or_path.strip())
    except target.TargetError as e:
        return [str(e)], ""
    found, t = target.check(path)
    if t is not None:
        try:
            locate(t.model, t.dir)
        except ModelError as e:
            found.append(str(e))
    return found, (f"{t.name}: {t.description} ({t.executor}; {t.benchmark.metric}, {t.benchmark.direction} "
                   "is better)" if t else "")  # fmt: skip


class LaunchScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("ctrl+s", "start", "Start")]

    def __init__(self, target_text: str = ""):
        super().__init__()
        self.target_text = target_text
        self.valid = False

    def compose(self) -> ComposeResult:
        bundled = [(p.name, p.name) for p in target.bundled()]
        yield Header()
        with VerticalScroll(id="launch"):
            yield Label("Target: a bundled name or a bundle folder")
            with Horizontal(classes="row"):
                yield Select(bundled, prompt="bundled…", id="bundled", allow_blank=True)
                yield Input(self.target_text, placeholder="targets/json-tiny or /path/to/bundle", id="target")
            yield Static("", id="target-check")
            yield Label("Policy")
            yield Select([(p, p) for p in policies.names()], value="tuner", id="policy", allow_blank=False)
            yield Label("Budgets (empty: the default)")
            with Horizontal(classes="row"):
                for key, label, default in LIMITS:
                    with Vertical(classes="limit"):
                        yield Label(label)
                        yield Input(placeholder=default, id=key, type="number")
            yield Static("Executor: as the target says (local MLX). Model endpoints: none, the offline tuner runs.",
                         classes="hint")  # fmt: skip
            yield Button("Start [ctrl+s]", id="start", variant="primary", disabled=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#target", Input).focus()
        self.validate_target(self.target_text)

    @on(Select.Changed, "#bundled")
    def bundled_picked(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.query_one("#target", Input).value = event.value

    @on(Input.Changed, "#target")
    def target_changed(self, event: Input.Changed) -> None:
        self.validate_target(event.value)

    @work(thread=True, exclusive=True, group="validate")
    def validate_target(self, text: str) -> None:
        found, about = problems(text)
        self.app.call_from_thread(self.show_check, text, found, about)

    def show_check(self, text: str, found: list[str], about: str) -> None:
        if text != self.query_one("#target", Input).value:
            return
        self.valid = not found
        check = self.query_one("#target-check", Static)
        check.set_class(not self.valid, "error")
        check.update("✓ " + about if self.valid else "\n".join(f"✗ {p}" for p in found))
        self.query_one("#start", Button).disabled = not self.valid

    @on(Button.Pressed, "#start")
    def start_pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        if not self.valid:
            self.notify("the target has problems: see the form", severity="error")
            return
        name = self.query_one("#target", Input).value.strip()
        where = str(Path(name).resolve()) if Path(name, "target.toml").exists() else name
        policy = str(self.query_one("#policy", Select).value)
        limits = {key: self.query_one(f"#{key}", Input).value.strip() for key, _, _ in LIMITS}
        pid, log = data.launch(where, policy, limits)
        self.app.notify(f"started {name} in the background (pid {pid}); log: {log}", timeout=8)
        self.app.pop_screen()
        opener = getattr(self.app.screen, "open_when_started", None)
        if opener:
            opener(pid)
