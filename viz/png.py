"""A sheet (or any figure) as a PNG: matplotlib on an Agg canvas, no display needed."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Patch, Rectangle

from viz.files import write_picture
from viz.sheet import (
    ERROR_OUTLINE,
    NAME_SEPARATOR,
    STYLE_CLUE,
    STYLE_FILL,
    STYLE_WRONG,
    VERDICT_COLOUR,
    VERDICT_MARK,
    Example,
    Panel,
    Sheet,
    outline_legend,
)

PNG_FORMATS = (".png",)
PNG_DPI = 100
PANEL_INCHES = 2.4  # side of one grid panel in the PNG
HEADER_INCHES = 0.9  # the title, note and legend above the panels (at least; a legend of many rows adds)
LEGEND_TOP_INCHES = 0.45  # the legend starts below the title and the note (two lines)
PANEL_TITLE_INCHES = 0.25  # between the legend and the panels: the panels' titles
SIDE_INCHES = 0.05  # kept free at the left and right of the title and of a legend row
TITLE_POINTS, TITLE_MIN_POINTS = 10.0, 5.0  # the title and note shrink to fit the width, not below the minimum
TEXT_COLOUR = {STYLE_CLUE: "#000000", STYLE_FILL: "#0074D9", STYLE_WRONG: "#C62828"}


def agg_figure(**kwargs) -> Figure:
    """A matplotlib Figure at PNG_DPI on its own Agg canvas (no pyplot, no global state)."""
    fig = Figure(dpi=PNG_DPI, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_path: str) -> str:
    """Write `fig` as a PNG at PNG_DPI, atomically; returns `out_path`."""
    return write_picture(out_path, lambda f: fig.savefig(f, format="png", dpi=PNG_DPI))


def _hex_to_rgb(colours: np.ndarray) -> np.ndarray:
    """(H, W) "#RRGGBB" -> (H, W, 3) floats in [0, 1]."""
    flat = [(int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)) for c in colours.ravel()]
    return np.array(flat, dtype=np.float64).reshape(colours.shape + (3,)) / 255.0


def _draw_lines(ax, panel: Panel) -> None:
    height, width = panel.colours.shape
    ax.add_patch(Rectangle((-0.5, -0.5), width, height, facecolor="none", edgecolor="#222222", linewidth=1.0))
    if panel.grid_lines:
        ax.hlines(np.arange(height + 1) - 0.5, -0.5, width - 0.5, colors="#555555", linewidth=0.5)
        ax.vlines(np.arange(width + 1) - 0.5, -0.5, height - 0.5, colors="#555555", linewidth=0.5)
    if panel.block:
        ax.hlines(np.arange(0, height + 1, panel.block) - 0.5, -0.5, width - 0.5, colors="#222222", linewidth=2)
        ax.vlines(np.arange(0, width + 1, panel.block) - 0.5, -0.5, height - 0.5, colors="#222222", linewidth=2)


def _draw_texts(ax, panel: Panel) -> None:
    if panel.texts is None:
        return
    height, width = panel.colours.shape
    size = max(4.0, min(12.0, 110.0 / max(height, width)))
    for (r, c), text in np.ndenumerate(panel.texts):
        if text:
            style = panel.styles[r, c] if panel.styles is not None else ""
            ax.text(c, r, text, ha="center", va="center", fontsize=size, color=TEXT_COLOUR.get(style, "#222222"),
                    fontweight="bold" if style in (STYLE_CLUE, STYLE_WRONG) else "normal")


def _draw_errors(ax, panel: Panel) -> None:
    if panel.errors is None or not panel.errors.any():
        return
    boxes = [Rectangle((c - 0.5, r - 0.5), 1, 1) for r, c in zip(*np.nonzero(panel.errors))]
    ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=ERROR_OUTLINE, linewidth=2.0))


def _centre_in(ax, shape: tuple[int, int], extent: tuple[int, int]) -> None:
    """Show the grid centred in an `extent`-sized window, so every panel of an example has the same cell
    size (an ARC output may be much smaller than its input: the picture should say so)."""
    pad_rows, pad_cols = (extent[0] - shape[0]) / 2, (extent[1] - shape[1]) / 2
    ax.set_xlim(-0.5 - pad_cols, shape[1] - 0.5 + pad_cols)
    ax.set_ylim(shape[0] - 0.5 + pad_rows, -0.5 - pad_rows)  # row 0 at the top, as imshow draws it


def draw_panel(ax, panel: Panel, extent: Optional[tuple[int, int]] = None,
               marks: Optional[dict[bool, str]] = None) -> None:
    """One grid on one axes: cells as an image (nearest: exact colours), then lines, texts, error outlines;
    a judged panel's title says its verdict in `marks` (default VERDICT_MARK)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)  # the grid draws its own border (the axes box may be larger)
    title = panel.title + ("" if panel.verdict is None else f"  {(marks or VERDICT_MARK)[panel.verdict]}")
    ax.set_title(title, fontsize=9, color=VERDICT_COLOUR.get(panel.verdict, "#222222"))
    if 0 in panel.colours.shape:
        ax.text(0.5, 0.5, "empty grid", ha="center", va="center", transform=ax.transAxes, fontsize=8, color="#888888")
        return
    ax.imshow(_hex_to_rgb(panel.colours), interpolation="nearest")
    _draw_lines(ax, panel)
    _draw_texts(ax, panel)
    _draw_errors(ax, panel)
    _centre_in(ax, panel.colours.shape, extent or panel.colours.shape)


def _extent(example: Example) -> tuple[int, int]:
    """The largest panel of an example, in cells."""
    return (max(p.colours.shape[0] for p in example.panels), max(p.colours.shape[1] for p in example.panels))


def _legend_handles(sheet: Sheet) -> list[Patch]:
    """A swatch per legend colour, and a red-outlined one when the panels outline cells."""
    handles = [Patch(facecolor=c, edgecolor="#888888", label=t) for c, t in sheet.legend]
    outline = outline_legend(sheet)
    if outline:
        handles.append(Patch(facecolor="#FFFFFF", edgecolor=ERROR_OUTLINE, linewidth=2.0, label=outline))
    return handles


def _legend(fig: Figure, handles: list[Patch], ncol: int) -> Legend:
    return fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=7, frameon=False, handlelength=1.0)


def _fitting_legend(fig: Figure, handles: list[Patch]) -> Legend:
    """The legend in as many columns as fit the figure's width (measured, not guessed from the number of
    entries: one row of six maze entries is wider than a sheet of two panels and was cut off)."""
    renderer = fig.canvas.get_renderer()
    room = fig.bbox.width - 2 * SIDE_INCHES * fig.dpi
    for ncol in range(len(handles), 1, -1):
        legend = _legend(fig, handles, ncol)
        if legend.get_window_extent(renderer).width <= room:
            return legend
        legend.remove()
    return _legend(fig, handles, 1)


def _place_legend(fig: Figure, handles: list[Patch], panels_inches: float) -> float:
    """Add the legend below the title and size the figure's height to panels plus a header that holds
    the legend's rows; returns the header's height in inches."""
    if not handles:
        fig.set_figheight(panels_inches + HEADER_INCHES)
        return HEADER_INCHES
    legend = _fitting_legend(fig, handles)
    legend_inches = legend.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi
    header = max(HEADER_INCHES, LEGEND_TOP_INCHES + legend_inches + PANEL_TITLE_INCHES)
    fig.set_figheight(panels_inches + header)
    legend.set_bbox_to_anchor((0.5, 1 - LEGEND_TOP_INCHES / fig.get_figheight()), transform=fig.transFigure)
    return header


def _fitting_title(fig: Figure, text: str) -> None:
    """The title and note at the top, in a smaller font when a line is wider than the figure (a long
    dataset path or note on a sheet of two panels was cut off at both edges)."""
    title = fig.suptitle(text, fontsize=TITLE_POINTS, y=0.995, va="top")
    width = title.get_window_extent(fig.canvas.get_renderer()).width
    room = fig.bbox.width - 2 * SIDE_INCHES * fig.dpi
    if width > room:
        title.set_fontsize(max(TITLE_MIN_POINTS, TITLE_POINTS * room / width))  # text width scales with it


def _name_lines(label, parts: list[str], room: float, renderer) -> str:
    """The name's parts joined on as few lines as keep each line within `room` pixels (drawn vertically)."""
    lines = [parts[0]]
    for part in parts[1:]:
        label.set_text(lines[-1] + NAME_SEPARATOR + part)
        if label.get_window_extent(renderer).height <= room:
            lines[-1] += NAME_SEPARATOR + part
        else:
            lines.append(part)
    return "\n".join(lines)


def _label_rows(fig: Figure, first_column, examples: list[Example]) -> None:
    """Each example's name along the left edge of its row, whole: broken into lines at its separators where it is
    longer than the row's panel (a name cut to 40 characters lost its votes), and the figure widened on the left
    to hold the lines, the panels keeping their size."""
    renderer = fig.canvas.get_renderer()
    widest = 0.0
    for ax, example in zip(first_column, examples):
        row_height = ax.get_position(original=True).height * fig.bbox.height  # the row's room, whatever the grid
        label = ax.set_ylabel(example.name, fontsize=8, color=VERDICT_COLOUR.get(example.verdict, "#222222"))
        label.set_text(_name_lines(label, example.name.split(NAME_SEPARATOR), row_height, renderer))
        widest = max(widest, label.get_window_extent(renderer).width + ax.yaxis.labelpad * fig.dpi / 72)
    width = fig.get_figwidth()
    left, right = fig.subplotpars.left * width, (1 - fig.subplotpars.right) * width
    extra = math.ceil(max(0.0, widest + SIDE_INCHES * fig.dpi - left * fig.dpi)) / fig.dpi  # whole pixels
    if extra:
        fig.set_figwidth(width + extra)
        fig.subplots_adjust(left=(left + extra) / (width + extra), right=1 - right / (width + extra))


def sheet_figure(sheet: Sheet) -> Figure:
    """One row per example, one column per panel; size = (cols, rows) x PANEL_INCHES plus the header
    (HEADER_INCHES, taller when the legend needs more than one row)."""
    rows = max(1, len(sheet.examples))
    cols = max([len(e.panels) for e in sheet.examples] + [1])
    fig = agg_figure(figsize=(cols * PANEL_INCHES, rows * PANEL_INCHES + HEADER_INCHES))
    header = _place_legend(fig, _legend_handles(sheet), rows * PANEL_INCHES)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.02, top=1 - header / fig.get_figheight(),
                        wspace=0.15, hspace=0.35)
    _fitting_title(fig, f"{sheet.title}\n{sheet.note}")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, example in enumerate(sheet.examples):
        for c, panel in enumerate(example.panels):
            draw_panel(axes[r, c], panel, _extent(example), sheet.marks)
    _label_rows(fig, axes[:, 0], sheet.examples)
    for ax in axes.ravel():
        if not ax.has_data() and not ax.texts and not ax.get_title():
            ax.set_axis_off()  # cells beyond an example's panels
    return fig


def write_png(sheet: Sheet, out_path: str) -> str:
    return save_figure(sheet_figure(sheet), out_path)
