"""The Atelier terminal UI: runs, a run, launch, compare. It reads the store from worker threads and changes
runs only through the store (app/control.py) or by starting `python -m app …` in the background."""

from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from app.store import StoreError
from app.tui.data import Reader
from app.tui.dialogs import Help
from app.tui.runs import RunsScreen

POLL_S = 0.5


class AtelierApp(App):
    CSS_PATH = "atelier.tcss"
    TITLE = "Atelier"
    SUB_TITLE = "bespoke LLM serving stacks"
    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, store: Path | None = None, poll: float = POLL_S):
        super().__init__()
        self.reader = Reader(store)
        self.poll = poll

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, Help):
            self.push_screen(Help())

    @work(thread=True, group="act")
    def act(self, fn, *args, done: str = "", then=None) -> None:
        """Run a store change off the UI thread; notify when done or with the error."""
        try:
            result = self.reader.call(fn, *args)
        except (StoreError, ValueError, OSError) as e:
            self.call_from_thread(self.notify, str(e), severity="error", timeout=8)
            return
        if done:
            self.call_from_thread(self.notify, done.format(result=result))
        if then is not None:
            self.call_from_thread(then, result)


def main(store: Path | None = None) -> int:
    AtelierApp(store).run()
    return 0
