"""A sheet as one self-contained HTML page: CSS inline, no scripts, fonts or images from elsewhere."""
from __future__ import annotations

import html

from viz.files import write_picture
from viz.sheet import Example, Panel, Sheet, outline_legend

HTML_FORMATS = (".html", ".htm")
HTML_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:16px;color:#222}
h1{font-size:18px} h2{font-size:14px;margin:6px 0}
.note{color:#555} .legend span{display:inline-block;margin-right:12px;font-size:12px}
.swatch{display:inline-block;width:12px;height:12px;border:1px solid #888;vertical-align:middle;margin-right:4px}
.swatch.outline{width:10px;height:10px;border:2px solid #E00000;background:#fff}
.example{border:2px solid #ccc;border-radius:6px;padding:8px;margin:10px 0}
.example.right{border-color:#2E7D32} .example.wrong{border-color:#C62828}
.badge{font-weight:bold;margin-left:8px} .right>h2 .badge,.panel.right .badge{color:#2E7D32}
.wrong>h2 .badge,.panel.wrong .badge{color:#C62828}
.panels{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.panel{margin:0} .panel figcaption{font-size:12px;margin-bottom:3px}
table.grid{border-collapse:collapse} table.grid td{padding:0;text-align:center;vertical-align:middle}
table.lines td{border:1px solid #555}
table.arc td{width:14px;height:14px} table.maze td{width:7px;height:7px}
table.sudoku td{width:24px;height:24px;font-size:15px;border:1px solid #999}
table.sudoku td.br{border-right:2px solid #222} table.sudoku td.bb{border-bottom:2px solid #222}
table.sudoku{border:2px solid #222} table.generic td{min-width:18px;height:18px;font-size:11px}
td.clue{font-weight:bold;color:#000} td.fill{color:#0074D9} td.wrong{color:#C62828;font-weight:bold}
td.err{outline:2px solid #E00000;outline-offset:-2px}
.empty{font-size:12px;color:#888;font-style:italic}
"""


class _ColourClasses:
    """One short CSS class per distinct colour: a 30x30 grid would otherwise repeat an inline style 900 times."""

    def __init__(self):
        self.classes: dict[str, str] = {}

    def of(self, colour: str) -> str:
        return self.classes.setdefault(colour, f"k{len(self.classes)}")

    def css(self) -> str:
        return "".join(f".{name}{{background:{colour}}}" for colour, name in self.classes.items())


def _verdict(verdict, marks: dict[bool, str]) -> tuple[str, str]:
    """The CSS state class and the badge of a judged panel or example ("" and "" when not judged)."""
    if verdict is None:
        return "", ""
    return (" right" if verdict else " wrong"), f'<span class="badge">{html.escape(marks[verdict])}</span>'


def _cell_html(panel: Panel, r: int, c: int, classes: _ColourClasses) -> str:
    names = [classes.of(panel.colours[r, c])]
    if panel.styles is not None and panel.styles[r, c]:
        names.append(panel.styles[r, c])
    if panel.errors is not None and panel.errors[r, c]:
        names.append("err")
    if panel.block and (c + 1) % panel.block == 0 and c + 1 < panel.colours.shape[1]:
        names.append("br")
    if panel.block and (r + 1) % panel.block == 0 and r + 1 < panel.colours.shape[0]:
        names.append("bb")
    text = html.escape(panel.texts[r, c]) if panel.texts is not None else ""
    return f'<td class="{" ".join(names)}">{text}</td>'


def _panel_html(panel: Panel, task: str, classes: _ColourClasses, marks: dict[bool, str]) -> str:
    state, badge = _verdict(panel.verdict, marks)
    caption = f"<figcaption>{html.escape(panel.title)}{badge}</figcaption>"
    height, width = panel.colours.shape
    if height == 0 or width == 0:
        return f'<figure class="panel{state}">{caption}<div class="empty">empty grid</div></figure>'
    lines = " lines" if panel.grid_lines else ""
    body = "".join("<tr>" + "".join(_cell_html(panel, r, c, classes) for c in range(width)) + "</tr>"
                   for r in range(height))
    return f'<figure class="panel{state}">{caption}<table class="grid {task}{lines}">{body}</table></figure>'


def _example_html(example: Example, task: str, classes: _ColourClasses, marks: dict[bool, str]) -> str:
    state, badge = _verdict(example.verdict, marks)
    panels = "".join(_panel_html(p, task, classes, marks) for p in example.panels)
    return (f'<section class="example{state}"><h2>{html.escape(example.name)}{badge}</h2>'
            f'<div class="panels">{panels}</div></section>')


def sheet_html(sheet: Sheet) -> str:
    """A complete HTML document: CSS inline, no scripts, fonts or images from elsewhere."""
    classes = _ColourClasses()
    examples = "\n".join(_example_html(e, sheet.task, classes, sheet.marks) for e in sheet.examples)
    legend = "".join(f'<span><i class="swatch" style="background:{c}"></i>{html.escape(t)}</span>'
                     for c, t in sheet.legend)
    outline = outline_legend(sheet)
    if outline:
        legend += f'<span><i class="swatch outline"></i>{html.escape(outline)}</span>'
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(sheet.title)}</title><style>{HTML_CSS}{classes.css()}</style></head>\n<body>"
            f"<h1>{html.escape(sheet.title)}</h1><p class=\"note\">{html.escape(sheet.note)}</p>"
            f"<div class=\"legend\">{legend}</div>\n{examples}\n</body></html>\n")


def write_html(sheet: Sheet, out_path: str) -> str:
    """The page as UTF-8 (whatever the locale), written atomically."""
    return write_picture(out_path, lambda f: f.write(sheet_html(sheet).encode("utf-8")))
