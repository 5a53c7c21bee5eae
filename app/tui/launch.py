"""The launch form: a bundled or local target validated as you type, the executor, the policy, a model endpoint per
role and budgets; start runs `python -m app run …` in its own session, so it survives closing the TUI."""

import contextlib
import threading
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static

from app import budgets, policies, target
from app.agents.config import ROLES
from app.model import ModelError, locate
from app.tui import choices, data
from app.tui.literal import lit
from backends.executor import ConfigError


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


def policy_label(name: str) -> str:
    return f"{name} (offline, no LLM)" if name in choices.OFFLINE else f"{name} (LLM agents)"


class LaunchScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("ctrl+s", "start", "Start")]

    def __init__(self, target_text: str = ""):
        super().__init__()
        self.target_text = target_text
        self.valid = False
        self.setup_problem = ""
        self.choices = choices.load()

    def compose(self) -> ComposeResult:
        bundled = [(p.name, p.name) for p in target.bundled()]
        yield Header()
        with VerticalScroll(id="launch"):
            yield Label("Target: a bundled name or a bundle folder")
            with Horizontal(classes="row"):
                yield Select([(lit(name), value) for name, value in bundled], prompt="bundled…", id="bundled",
                             allow_blank=True)  # fmt: skip
                yield Input(self.target_text, placeholder="targets/json-tiny or /path/to/bundle", id="target")
            yield Static("", id="target-check")
            with Horizontal(classes="row"):
                with Vertical(classes="pick"):
                    yield Label("Executor")
                    executors = [(lit(label), value) for label, value in self.choices.executors]
                    yield Select(executors, value=choices.AS_TARGET, id="executor", allow_blank=False)
                with Vertical(classes="pick"):
                    yield Label("Policy")
                    yield Select([(policy_label(p), p) for p in policies.names()], value="tuner", id="policy",
                                 allow_blank=False)  # fmt: skip
            yield Label("Model endpoint per role (the endpoints the Atelier config defines)")
            with Horizontal(classes="row"):
                for role in ROLES:
                    with Vertical(classes="role"):
                        yield Label(role)
                        yield Select([], id=f"role-{role}", allow_blank=True, prompt="none")
            yield Static("", id="setup-check")
            yield Label("Budgets (empty: the default)")
            with Horizontal(classes="row"):
                for b in budgets.BUDGETS:
                    with Vertical(classes="limit"):
                        yield Label(lit(b.label))
                        yield Input(placeholder=f"{b.default:g}", id=b.key, classes="budget")
            yield Static("", id="budget-check", classes="error")
            yield Button(lit("Start [ctrl+s]"), id="start", variant="primary", disabled=True)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#target", Input).focus()
        self.show_roles()
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
        check.update(lit("✓ " + about if self.valid else "\n".join(f"✗ {p}" for p in found)))
        self.update_start()

    def typed_budgets(self) -> dict[str, str]:
        return {b.key: self.query_one(f"#{b.key}", Input).value for b in budgets.BUDGETS}

    @on(Input.Changed, ".budget")
    def budget_changed(self) -> None:
        """The same rules and messages as `atelier run --max-rounds …` (app/budgets.py)."""
        try:
            budgets.parse_all(self.typed_budgets())
            problem = ""
        except ValueError as e:
            problem = f"✗ {e}"
        self.query_one("#budget-check", Static).update(lit(problem))
        self.update_start()

    def policy(self) -> str:
        return str(self.query_one("#policy", Select).value)

    @on(Select.Changed, "#policy")
    def show_roles(self) -> None:
        """The tuner needs no endpoint; an LLM policy needs the config's endpoints, one picked per role."""
        offline = self.policy() in choices.OFFLINE
        for role in ROLES:
            select = self.query_one(f"#role-{role}", Select)
            options = [] if offline else self.choices.options(role)
            select.set_options([(lit(label), value) for label, value in options])
            select.prompt = "none: offline tuner" if offline else "none configured"
            select.disabled = offline or not options
            if options:
                select.value = self.choices.defaults.get(role, options[0][1])
        self.check_setup()

    @on(Select.Changed, ".role Select")
    def check_setup(self) -> None:
        self.setup_problem = ""
        if self.choices.problem:
            self.setup_problem = self.choices.problem
        elif self.policy() not in choices.OFFLINE:
            if not self.choices.endpoints:
                self.setup_problem = (f"the {self.policy()} policy needs an LLM endpoint and {self.choices.path} "
                                      "has no [llm] table: add one (README, LLM agents) or pick the tuner")  # fmt: skip
            else:
                try:
                    choices.settings(self.choices, self.picks())
                except ConfigError as e:
                    self.setup_problem = str(e)
        check = self.query_one("#setup-check", Static)
        check.set_class(bool(self.setup_problem), "error")
        check.update(lit(f"✗ {self.setup_problem}" if self.setup_problem else ""))
        self.update_start()

    def picks(self) -> dict[str, str]:
        picked = {role: self.query_one(f"#role-{role}", Select).value for role in ROLES}
        return {
            role: value if isinstance(value, str) else self.choices.defaults[role] for role, value in picked.items()
        }

    def budget_problem(self) -> str:
        try:
            budgets.parse_all(self.typed_budgets())
        except ValueError as e:
            return str(e)
        return ""

    def update_start(self) -> None:
        blocked = bool(self.setup_problem) and self.policy() not in choices.OFFLINE
        self.query_one("#start", Button).disabled = not self.valid or blocked or bool(self.budget_problem())

    def executor(self) -> str:
        value = self.query_one("#executor", Select).value
        return value if isinstance(value, str) else choices.AS_TARGET

    @on(Button.Pressed, "#start")
    def start_pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        if self.query_one("#start", Button).disabled:
            problem = self.budget_problem() or (self.setup_problem if self.valid else "the target has problems")
            self.notify(f"cannot start: {problem} (see the form)", severity="error")
            return
        name = self.query_one("#target", Input).value.strip()
        where = str(Path(name).resolve()) if Path(name, "target.toml").exists() else name
        limits = {key: str(value) for key, value in budgets.parse_all(self.typed_budgets()).items()}
        settings = None
        if self.policy() not in choices.OFFLINE:
            settings = choices.settings(self.choices, self.picks())
        try:
            pid, log = data.launch(where, self.policy(), limits, self.executor(), settings)
        except OSError as e:
            self.notify(f"cannot start {name}: {e}", severity="error", timeout=10)
            return
        self.app.notify(f"starting {name} in the background (pid {pid}); log: {log}", timeout=8)
        watch_start(self.app, pid, log, name)
        self.app.pop_screen()
        opener = getattr(self.app.screen, "open_when_started", None)
        if opener:
            opener(pid)


def watch_start(app, pid: int, log: Path, name: str) -> None:
    """A launched run that dies at once (a bad option, a broken target) is shown with its error, not left silent."""

    def watch() -> None:
        if problem := data.failed_start(pid, log):
            with contextlib.suppress(RuntimeError):  # the app has closed meanwhile
                app.call_from_thread(app.notify, f"{name} did not start: {problem}", severity="error", timeout=30)
                app.call_from_thread(_stop_waiting, app, pid)

    threading.Thread(target=watch, daemon=True).start()


def _stop_waiting(app, pid: int) -> None:
    for screen in app.screen_stack:
        if getattr(screen, "waiting_for", None) == pid:
            screen.waiting_for = None
