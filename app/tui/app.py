"""The Atelier terminal UI: runs, a run, launch, compare. It reads the store from worker threads and changes
runs only through the store (app/control.py) or by starting `python -m app …` in the background."""

import gc
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from app.store import StoreError, home
from app.tui.data import Reader
from app.tui.dialogs import Help
from app.tui.runs import RunsScreen

POLL_S = 0.5


class AtelierApp(App):
    CSS_PATH = Path(__file__).with_name("atelier.tcss")
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

    def settled(self) -> None:
        """A screen has drawn its first data: what exists now stays, so no collection needs to scan it again. Without
        this, a full collection of every widget, style and render cache stalls the screen for 100 ms and more."""
        self.call_after_refresh(gc.freeze)

    def pop_screen(self):
        """Back from a screen: collect its widgets now, at a key press, rather than in the middle of watching a run."""
        done = super().pop_screen()
        gc.unfreeze()
        self.call_after_refresh(self.settle_all)
        return done

    def settle_all(self) -> None:
        gc.collect()
        gc.freeze()

    def on_unmount(self) -> None:
        gc.unfreeze()

    def notify(self, message, *, title="", severity="information", timeout=None, markup=False) -> None:
        """Every notification is literal: messages carry paths, errors and agents' words (app/tui/literal.py)."""
        from app.tui.literal import clean

        super().notify(clean(message), title=clean(title), severity=severity, timeout=timeout, markup=False)

    def deliver_screenshot(self, filename=None, path=None, time_format=None):
        """Screenshots go to ~/Downloads when it exists, else to $ATELIER_HOME/screenshots; the path is shown."""
        folder = Path(path) if path else Path.home() / "Downloads"
        if not folder.is_dir():
            folder = home() / "screenshots"
            folder.mkdir(parents=True, exist_ok=True)
        key = super().deliver_screenshot(filename, str(folder), time_format)
        self.notify(f"screenshot saved in {folder}")
        return key

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
