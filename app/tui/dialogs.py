"""Modal dialogs shared by every screen: confirm, ask for a line of text, change a run's budgets, help."""

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from app import budgets
from app.tui.literal import lit

HELP = """\
# Atelier

Atelier searches for a faster serving stack, round by round. Every screen lists its keys in the footer.

## Runs
- **enter** open the run · **space** mark it for comparing · **c** compare the marked runs
- **/** filter by any text · **s** cycle the sort column · **n** launch a new run
- **r** resume an interrupted run · **d** delete a run (asks first)

## A run
- tabs, switched with **1** to **8** (or **tab** to the tab bar, then **←** **→**): **1** rounds (with the trend),
  **2** diff of the selected round, **3** image, **4** memory and notes, **5** backlog, **6** usage,
  **7** transcripts, **8** events (live)
- **enter** on a round: its detail — the full reason, each input's verdict, the metric samples and interval, the
  profile summary and the files changed: why it was kept or rejected
- **p** pause · **r** resume · **x** stop (asks) · **t** steer: add a note for the next round
- **b** change the budgets of the run (a live run takes them up at its next step)
- backlog: **k** park the selected issue (the Orchestrator skips it) · **o** open it again · **d** drop it
- **v** revert to the selected accepted round (asks) · **e** export the best stack

## Anywhere
- **?** this help · **escape** back · **q** quit (runs keep going in the background)
"""


class Confirm(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, message: str, yes: str = "Yes"):
        super().__init__()
        self.message = message
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(lit(self.message), classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(lit(f"{self.yes} [y]"), id="yes", variant="error")
                yield Button(lit("No [n]"), id="no")

    def on_mount(self) -> None:
        self.query_one("#no").focus()

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)

    @on(Button.Pressed, "#yes")
    def yes_pressed(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def no_pressed(self) -> None:
        self.dismiss(False)


class Ask(ModalScreen[str]):
    """One line of text, or "" when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, placeholder: str = "", value: str = ""):
        super().__init__()
        self.title_text = title
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(lit(self.title_text), classes="dialog-message")
            yield Input(self.value, placeholder=self.placeholder, id="answer")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss("")


class Budgets(ModalScreen[dict]):
    """A run's budgets, each field holding its current value; enter checks them all (app/budgets.py), escape
    cancels with {}."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: dict):
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                lit("Budgets of this run: a live run takes them up at its next step (enter sets, escape cancels)"),
                classes="dialog-message",
            )
            with Horizontal(classes="dialog-buttons"):
                for b in budgets.BUDGETS:
                    with Vertical(classes="limit"):
                        yield Label(lit(b.label))
                        yield Input(f"{self.current.get(b.key, b.default):g}", id=b.key)
            yield Static("", id="budgets-error", classes="error")

    @on(Input.Submitted)
    def submitted(self) -> None:
        typed = {b.key: self.query_one(f"#{b.key}", Input).value for b in budgets.BUDGETS}
        try:
            values = budgets.parse_all(typed)
        except ValueError as e:
            self.query_one("#budgets-error", Static).update(lit(f"✗ {e}"))
            return
        self.dismiss({k: v for k, v in values.items() if v != self.current.get(k, budgets.BY_KEY[k].default)})

    def action_cancel(self) -> None:
        self.dismiss({})


class Help(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it is slow to import: only when help is asked for

        with VerticalScroll(classes="dialog help"):
            yield Markdown(HELP)
