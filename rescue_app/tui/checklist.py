"""A SelectionList whose ticks read without colour: ``[x]`` and ``[ ]``.

Textual's own SelectionList draws both states as the same glyphs and tells
them apart by colour only; on a serial console or with NO_COLOR a user read
them reversed and backed up the wrong disks. These marks read anywhere.
"""

from __future__ import annotations

from rich.segment import Segment
from rich.style import Style
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, SelectionList
from textual.widgets.option_list import OptionDoesNotExist

TICKED = "[x] "
UNTICKED = "[ ] "


class CheckList(SelectionList[str]):
    def render_line(self, y: int) -> Strip:
        # OptionList's own line (the prompt), without SelectionList's button.
        line = super(SelectionList, self).render_line(y)
        index = self.scroll_offset[1] + y
        try:
            option = self.get_option_at_index(index)
        except OptionDoesNotExist:
            return line
        base = next(iter(line)).style or self.rich_style
        mark = TICKED if option.value in self._selected else UNTICKED
        style = base + Style(bold=option.value in self._selected, meta={"option": index})
        return Strip([Segment(mark, style=style), *line])


class MarkedCheckbox(Checkbox):
    """A Checkbox drawn ``[x]`` / ``[ ]``: its state reads without colour too."""

    @property
    def _button(self) -> Content:
        return Content.assemble(
            (
                TICKED.rstrip() if self.value else UNTICKED.rstrip(),
                self.get_visual_style("toggle--button"),
            )
        )
