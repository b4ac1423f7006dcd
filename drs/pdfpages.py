"""A small page-layout engine for the PDF report: text, tables and plots down A4 pages.

matplotlib draws every page (no other PDF library is needed); a PageWriter starts a
new page when the next block would not fit, keeps a heading with what follows it, and
numbers the pages in their footers.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

# Page layout, in inches and points.
PAGE_SIZE = (8.27, 11.69)  # A4 portrait
MARGIN = 0.7
FOOTER_Y = 0.3
BODY_SIZE = 9.5
SMALL_SIZE = 8
TITLE_SIZE = 18
HEADING_SIZE = 13
LINE_SPACING = 1.45  # line height, in multiples of the font size
CHAR_WIDTH = 0.52  # average glyph width, in multiples of the font size
BOLD_WIDTH = 1.12  # bold glyphs are this much wider: wrap them sooner
ROW_HEIGHT = 1.9  # table row height, in multiples of the font size
ORPHAN_ROWS = 3  # fewest table rows carried over to a new page
HEADING_KEEP = 1.2  # inches of what follows that a heading keeps on its page
POINTS_PER_INCH = 72


class PageWriter:
    """Lays text, tables and plots down A4 pages from the top, starting pages as needed."""

    def __init__(self, pdf: PdfPages, footer: str) -> None:
        self.pdf = pdf
        self.footer = footer
        self.figure: Figure | None = None
        self.number = 0
        self.y = 0.0  # inches from the top of the page already used
        self.width = PAGE_SIZE[0] - 2 * MARGIN

    def new_page(self) -> None:
        from matplotlib.figure import Figure

        self.finish_page()
        self.figure = Figure(figsize=PAGE_SIZE)
        self.number += 1
        self.y = MARGIN

    def finish_page(self) -> None:
        if self.figure is not None:
            self.figure.text(
                0.5,
                FOOTER_Y / PAGE_SIZE[1],
                f"{self.footer} - page {self.number}",
                ha="center",
                fontsize=7.5,
                color="0.4",
            )
            self.pdf.savefig(self.figure)
            self.figure = None

    def room(self) -> float:
        return PAGE_SIZE[1] - MARGIN - self.y

    def need(self, inches: float) -> Figure:
        """The current page, or a new one when fewer than `inches` remain."""
        if self.figure is None or self.room() < inches:
            self.new_page()
        assert self.figure is not None
        return self.figure

    def _line_height(self, size: float) -> float:
        return size * LINE_SPACING / POINTS_PER_INCH

    def _text_at(self, text: str, size: float, **style: Any) -> None:
        figure = self.need(self._line_height(size))
        # Drawn before the page's tables and plots (zorder), so text extraction reads a
        # page's words in order: the verdict first on page 1.
        figure.text(
            MARGIN / PAGE_SIZE[0],
            1 - self.y / PAGE_SIZE[1],
            text,
            va="top",
            fontsize=size,
            zorder=-1,
            **style,
        )
        self.y += self._line_height(size)

    def title(self, text: str, **style: Any) -> None:
        self._text_at(text, TITLE_SIZE, fontweight="bold", **style)
        self.y += 0.1

    def heading(self, text: str, keep_with: float = HEADING_KEEP) -> None:
        """A section heading, never alone at a page's foot: it keeps keep_with inches with it."""
        self.need(0.45 + keep_with)
        self.y += 0.12
        self._text_at(text, HEADING_SIZE, fontweight="bold", color="#12355b")
        self.y += 0.05

    def lines_of(self, text: str, size: float = BODY_SIZE, bold: bool = False) -> list[str]:
        glyph = CHAR_WIDTH * (BOLD_WIDTH if bold else 1.0)
        columns = int(self.width * POINTS_PER_INCH / (size * glyph))
        return textwrap.wrap(text, columns) or [""]

    def paragraph(self, text: str, size: float = BODY_SIZE, **style: Any) -> None:
        """Wrapped text, kept on one page."""
        bold = style.get("fontweight") == "bold"
        self.need(self.paragraph_height(text, size, bold))
        for line in self.lines_of(text, size, bold):
            self._text_at(line, size, **style)
        self.y += 0.06

    def paragraph_height(self, text: str, size: float = BODY_SIZE, bold: bool = False) -> float:
        return len(self.lines_of(text, size, bold)) * self._line_height(size) + 0.06

    def table(
        self,
        header: Sequence[str] | None,
        rows: Sequence[Sequence[Any]],
        widths: Sequence[float],
        size: float = 8.5,
        highlight: Callable[[int], bool] | None = None,
    ) -> None:
        """A table with a header row, split over pages when long; cells cut to fit.

        highlight(row index) marks rows to read first (drifted features, say).
        """
        height = size * ROW_HEIGHT / POINTS_PER_INCH
        limits = [max(int(w * self.width * POINTS_PER_INCH / (size * 0.55)), 4) for w in widths]

        def cut(value: Any, limit: int) -> str:
            text = value if isinstance(value, str) else cell_text(value)
            return text if len(text) <= limit else text[: limit - 1] + "…"

        remaining = [
            (index, [cut(v, limit) for v, limit in zip(row, limits, strict=True)])
            for index, row in enumerate(rows)
        ]
        while True:
            self.need(3 * height)
            fit = max(int(self.room() / height) - 1, 1)
            if 0 < len(remaining) - fit < ORPHAN_ROWS < fit:
                # Carry a few rows over rather than leave one alone on the next page.
                fit = len(remaining) - ORPHAN_ROWS
            chunk, remaining = remaining[:fit], remaining[fit:]
            box = (len(chunk) + bool(header)) * height
            assert self.figure is not None
            ax = self.figure.add_axes(self._box(self.y, box))
            ax.axis("off")
            drawn = ax.table(
                cellText=[cells for _, cells in chunk] or [["" for _ in widths]],
                colLabels=list(header) if header else None,
                colWidths=list(widths),
                cellLoc="left",
                bbox=(0, 0, 1, 1),  # type: ignore[arg-type]  # matplotlib takes a tuple too
            )
            drawn.auto_set_font_size(False)
            drawn.set_fontsize(size)
            for (row, _), cell in drawn.get_celld().items():
                cell.set_edgecolor("0.75")
                cell.PAD = 0.02
                if header and row == 0:
                    cell.set_facecolor("#dfe7f0")
                    cell.get_text().set_fontweight("bold")
                elif highlight is not None and chunk and highlight(chunk[row - bool(header)][0]):
                    cell.set_facecolor("#fde8c8")
                    cell.get_text().set_fontweight("bold")
            self.y += box + 0.15
            if not remaining:
                return

    def _box(
        self, top: float, height: float, left: float = 0.0
    ) -> tuple[float, float, float, float]:
        """An axes rectangle in figure fractions: `height` inches from `top` inches down."""
        return (
            (MARGIN + left) / PAGE_SIZE[0],
            1 - (top + height) / PAGE_SIZE[1],
            (self.width - left) / PAGE_SIZE[0],
            height / PAGE_SIZE[1],
        )

    def axes(self, height: float, left: float = 0.6, bottom: float = 0.45) -> Axes:
        """An axes block of the given height (inches) with room for tick labels."""
        figure = self.need(height)
        ax = figure.add_axes(
            (
                (MARGIN + left) / PAGE_SIZE[0],
                1 - (self.y + height - bottom) / PAGE_SIZE[1],
                (self.width - left - 0.1) / PAGE_SIZE[0],
                (height - bottom - 0.1) / PAGE_SIZE[1],
            )
        )
        self.y += height + 0.1
        return ax


def cell_text(value: Any, digits: int = 4) -> str:
    """A table cell: numbers with thousands separators, n/a for what is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:,.{digits}f}"
    return str(value)
