"""Plain HTML for check results and practice sets: no widgets, so it renders in JupyterLab,
Colab (ipywidgets 7) and a built book alike."""

from __future__ import annotations

import html

PASS = {"border": "#2e7d32", "background": "#edf7ee", "mark": "✓"}
FAIL = {"border": "#c62828", "background": "#fdecea", "mark": "✗"}
PENDING = {"border": "#757575", "background": "#f3f3f3", "mark": "…"}


def result_html(passed: bool, message: str, pending: bool = False) -> str:
    """A green box (passed), a red one (failed) or a grey one (an answer not given yet) holding
    the message, preformatted."""
    style = PENDING if pending else PASS if passed else FAIL
    label = "to do" if pending else "passed" if passed else "not yet"
    return (
        f'<div style="border-left: 6px solid {style["border"]}; '
        f'background: {style["background"]}; padding: 6px 10px; margin: 4px 0; '
        'color: #1a1a1a;">'
        f'<b style="color: {style["border"]};">{style["mark"]} '
        f'{label}</b>'
        '<pre style="white-space: pre-wrap; margin: 4px 0 0 0; background: transparent; '
        f'color: inherit;">{html.escape(message)}</pre></div>'
    )


def practice_html(chapter: str, title: str, questions) -> str:
    """The questions of a practice set as a numbered list, with choices and how to answer."""
    items = []
    for q in questions:
        body = f"<b>{html.escape(q.id)}</b> ({html.escape(q.kind)}) {html.escape(q.text)}"
        if q.kind == "choice":
            body += "<br>" + "<br>".join(
                f"&nbsp;&nbsp;({chr(97 + i)}) {html.escape(c)}" for i, c in enumerate(q.choices))
        elif q.kind == "curves":
            body += ("<br>&nbsp;&nbsp;labels: " + html.escape(", ".join(q.choices))
                     + "; curves: " + html.escape(", ".join(q.curves)))
        items.append(f'<li style="margin-bottom: 6px;">{body}</li>')
    how = html.escape(
        f'exercises.answer("{chapter}", "q1", value) checks an answer; '
        f'exercises.solution("{chapter}", "q1") shows the worked answer.')
    return (
        f'<div style="border-left: 6px solid #1f77b4; padding: 6px 10px; margin: 4px 0;">'
        f"<b>Practice set {html.escape(chapter)} · {html.escape(title)}</b>"
        f'<ol style="list-style: none; padding-left: 0;">{"".join(items)}</ol>'
        f"<i>{how}</i></div>"
    )
