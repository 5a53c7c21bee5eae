from typing import TYPE_CHECKING, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from app.tui.app import AtelierApp


class AtelierScreen(Screen):
    """A screen that knows its app is Atelier's (its store reader, poll interval and `act`)."""

    @property
    def atelier(self) -> "AtelierApp":
        return cast("AtelierApp", self.app)
