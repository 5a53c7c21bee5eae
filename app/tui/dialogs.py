"""Modal dialogs shared by every screen: confirm, ask for a line of text, help."""

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

HELP = """\
# Atelier

Atelier searches for a faster serving stack, round by round. Every screen lists its keys in the footer.

## Runs
- **enter** open the run · **space** mark it for comparing · **c** compare the marked runs
- **/** filter by any text · **s** cycle the sort column · **n** launch a new run
- **r** resume an interrupted run · **d** delete a run (asks first)

## A run
- tabs: **rounds** (with the trend), **diff** of the selected round, **memory** and notes, **usage**,
  **transcripts**, **events** (live)
- **p** pause · **r** resume · **x** stop (asks) · **t** steer: add a note for the next round
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
            yield Static(self.message, classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} [y]", id="yes", variant="error")
                yield Button("No [n]", id="no")

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
            yield Static(self.title_text, classes="dialog-message")
            yield Input(self.value, placeholder=self.placeholder, id="answer")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss("")


class Help(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it is slow to import: only when help is asked for

        with VerticalScroll(classes="dialog help"):
            yield Markdown(HELP)
