"""Printed-page arithmetic shared by the workbooks people print (report forms, the blank
template, the feedback sheet).

Spreadsheet programs do not grow a row for wrapped text written by xlsxwriter/openpyxl
(LibreOffice keeps the stored default height, Excel only recomputes on edit), so every
writer sizes its rows from the text. Widths are estimated, not measured: the estimate is
deliberately generous (DejaVu Serif, what LibreOffice substitutes for Times New Roman on a
machine without it, is ~20% wider than Times), so a row is never too short on either.
"""
from __future__ import annotations

import math

# A4 and A3 in points (portrait), and xlsxwriter's paper codes
PAPER = {"A4": (595.3, 841.9, 9), "A3": (841.9, 1190.6, 8)}
MARGIN_IN = {"left": 0.4, "right": 0.4, "top": 0.55, "bottom": 0.55}

# average advance of a character, in ems, by kind (DejaVu Serif, rounded up)
_WIDE, _NARROW, _SPACE = 0.78, 0.33, 0.32
_NARROW_CHARS = set("iljtfrI.,;:'!|()[]-/")


def column_points(width: float) -> float:
    """A column of `width` character units, in points, as wide as any program we know prints
    it — for fitting pages. Excel (Calibri): 7 px per unit + 5 px = 5.25·w + 3.75 pt;
    LibreOffice without Calibri's metric twin (Carlito) measures units in DejaVu Sans:
    7·w + 5 pt (measured), a third wider."""
    return 7.0 * width + 5.0 if width > 0 else 0.0


def wrap_points(width: float) -> float:
    """The same column as narrow as any program prints it (Excel's) — for wrapping text,
    so a row sized from it is tall enough everywhere."""
    return (int(width * 7 + 0.5) + 5) * 0.75 if width > 0 else 0.0


def text_points(text: str, font_pt: float, bold: bool = False) -> float:
    """The printed width of one line of text, estimated."""
    em = 0.0
    for ch in text:
        if ch == " ":
            em += _SPACE
        elif ch in _NARROW_CHARS:
            em += _NARROW
        elif ch.isupper() or ch in "mwMW%@&—":
            em += _WIDE
        else:
            em += 0.58
    return em * font_pt * (1.08 if bold else 1.0)


# Times New Roman / Calibri set text ~16% narrower than DejaVu Serif / Sans, their stand-ins
OFFICE_FONT_FACTOR = 0.84


def wrapped_lines(text: str, width_points: float, font_pt: float, bold: bool = False) -> int:
    """How many lines `text` takes, wrapped at word boundaries in a cell `width_points` wide as
    Excel prints it (`wrap_points`): the more of Excel (Office fonts, narrow columns) and
    LibreOffice without them (DejaVu text, columns a third wider)."""
    excel = _lines(text, width_points, font_pt * OFFICE_FONT_FACTOR, bold)
    libre = _lines(text, width_points * 4 / 3, font_pt, bold)
    return max(excel, libre)


def _lines(text: str, width_points: float, font_pt: float, bold: bool = False) -> int:
    usable = max(1.0, width_points - 6)  # cell padding
    lines = 0
    for para in str(text).split("\n"):
        lines += 1
        used = 0.0
        for word in para.split(" "):
            w = text_points(word, font_pt, bold)
            gap = text_points(" ", font_pt) if used else 0.0
            if used and used + gap + w > usable:
                lines += 1
                used = 0.0
                gap = 0.0
            if w > usable:  # a word longer than the cell breaks across lines
                extra = math.ceil(w / usable) - 1
                lines += extra
                used = w - extra * usable
            else:
                used += gap + w
    return max(1, lines)


def line_height(font_pt: float) -> float:
    """Row height of one line of text (Excel's 15.75 pt for 12 pt Times)."""
    return round(font_pt * 1.32 + 0.0, 2)


def rows_height(lines: int, font_pt: float) -> float:
    return round(lines * line_height(font_pt) + 2, 2)


def printable_width(paper: str, landscape: bool) -> float:
    w, h, _ = PAPER[paper]
    return (h if landscape else w) - (MARGIN_IN["left"] + MARGIN_IN["right"]) * 72


def printable_height(paper: str, landscape: bool) -> float:
    """Height left for the table (margins and the footer's line taken off)."""
    w, h, _ = PAPER[paper]
    return (w if landscape else h) - (MARGIN_IN["top"] + MARGIN_IN["bottom"]) * 72 - 20
