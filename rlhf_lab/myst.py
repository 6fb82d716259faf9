"""MyST Markdown → plain Markdown, for the Colab notebooks (Colab renders no MyST).

The book keeps the MyST of a chapter (citations, numbered equations, cross-references); its
notebook gets the same text as plain Markdown: "Author (Year)" citations and a References cell
(:func:`references`), equations numbered with \\tag{n} and referenced as "(n)", directives as
block quotes, labels dropped (:func:`plain_markdown`). Pure text in, text out; ``book.py``
applies it to every chapter (``notebook_json``) and re-exports the names here.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

BIB = Path(__file__).resolve().parent.parent / "book" / "references.bib"  # the book's bibliography
_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<body>[^`]*)`")
_EQ_LABEL = re.compile(r"^(?P<indent>[ \t]*)\$\$[ \t]*\((?P<label>[\w:.-]+)\)[ \t]*$", re.M)
_TARGET = re.compile(r"^[ \t]*\([\w:.-]+\)=[ \t]*\n?", re.M)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
_ACCENTS = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "^": "\u0302", "~": "\u0303", "c": "\u0327",
            "v": "\u030c", "u": "\u0306", "=": "\u0304", ".": "\u0307", "H": "\u030b"}


def _delatex(text: str) -> str:
    """BibTeX text as plain Unicode: accents (``{\\'e}`` -> é), braces and ``--`` dropped."""
    import unicodedata

    def accent(m: re.Match) -> str:
        return unicodedata.normalize("NFC", m.group(2) + _ACCENTS[m.group(1)])

    text = re.sub(r"\\([\'`\"^~cvu=.H])\s*\{?([A-Za-z])\}?", accent, text)
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "").replace("--", "\u2013")).strip()


def bibliography(path: Path = BIB) -> dict[str, dict[str, str]]:
    """The entries of a BibTeX file: key -> fields (plain text), plus ``type``."""
    entries = {}
    for m in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,(.*?)\n\}", path.read_text(), re.S):
        fields = {"type": m.group(1).lower()}
        for f in re.finditer(r"(\w+)\s*=\s*(\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}|\"[^\"]*\"|\d+)", m.group(3)):
            fields[f.group(1).lower()] = _delatex(f.group(2).strip('"')[1:-1] if f.group(2)[0] in "{\"" else f.group(2))
        entries[m.group(2)] = fields
    return entries


def _surnames(entry: dict[str, str]) -> list[str]:
    names = [a.strip() for a in entry.get("author", "Anonymous").split(" and ")]
    return [n.split(",")[0].strip() if "," in n else n.split()[-1] for n in names]


def _authors_short(entry: dict[str, str]) -> str:
    names = _surnames(entry)
    if len(names) >= 3 or "others" in names:
        return f"{names[0]} et al."
    return " and ".join(names)


def _reference(entry: dict[str, str]) -> str:
    names = [a.strip() for a in entry.get("author", "").split(" and ")]
    full = []
    for n in names:
        if n == "others":
            full.append("et al.")
        elif "," in n:
            last, first = n.split(",", 1)
            full.append(f"{first.strip()} {last.strip()}")
        else:
            full.append(n)
    authors = ", ".join(full).replace(", et al.", " et al.")
    venue = entry.get("journal") or entry.get("booktitle") or entry.get("publisher") or entry.get("note") or ""
    return f"{authors} ({entry.get('year', 'n.d.')}). {entry.get('title', '')}." + (f" *{venue}*." if venue else "")


def number_equations(chapters: list[Path]) -> dict[str, tuple[str, int]]:
    """Every labelled equation of the chapters, in order: label -> (chapter number "NN", n).

    Numbered as the book numbers them: from 1, through the chapters in table-of-contents order
    (the site shows chapter 07's first labelled equation as (20)), so a notebook and its page
    agree; tests/test_book.py checks it against the built site.
    """
    numbers, n = {}, 0
    for path in chapters:
        for m in _EQ_LABEL.finditer(path.read_text()):
            n += 1
            numbers[m.group("label")] = (path.stem.split("_")[0], n)
    return numbers


def _directive(lines: list[str], k: int, m: re.Match) -> tuple[list[str], int]:
    """A fenced MyST directive from lines[k] as plain Markdown; returns (new lines, next index)."""
    indent, fence, name, arg = m.group("indent"), m.group("fence"), m.group("name"), m.group("arg").strip()
    body, j = [], k + 1
    while j < len(lines) and lines[j].strip() != fence:
        body.append(lines[j])
        j += 1
    options = {}
    while body and re.match(r"^[ \t]*:[\w-]+:", body[0]):
        key, _, value = body.pop(0).strip()[1:].partition(":")
        options[key] = value.strip()
    while body and not body[0].strip():
        body.pop(0)
    if name in {"code-block", "code", "sourcecode", "code-cell"}:
        return [f"{indent}```{arg}", *body, f"{indent}```"], j + 1
    if name == "math":
        return [f"{indent}$$", *body, f"{indent}$$"], j + 1
    if name in {"figure", "image"}:
        caption = " ".join(b.strip() for b in body) or options.get("alt", "")
        return [f"{indent}![{caption}]({arg})"], j + 1
    title = arg if name == "admonition" else name.replace("-", " ").capitalize() + (f": {arg}" if arg else "")
    return [f"{indent}> **{title}**", f"{indent}>", *[f"{indent}> {b[len(indent):]}".rstrip() for b in body]], j + 1


def plain_markdown(text: str, chapter: str, equations: dict[str, tuple[str, int]],
                   bib: dict[str, dict[str, str]], cited: list[str], files: str = "") -> str:
    """One Markdown cell of chapter ``chapter`` ("NN") with no MyST left; cited keys are appended
    to ``cited`` (for the References cell). A link to another page of the book (``{doc}``)
    points at its Markdown file under ``files`` (the repository's files on GitHub, which render
    it), or is plain text without it."""
    lines, out, k = text.split("\n"), [], 0
    while k < len(lines):
        m = _FENCE.match(lines[k])
        if m:
            new, k = _directive(lines, k, m)
            out += new
        else:
            out.append(lines[k])
            k += 1
    text = "\n".join(out)

    # $$ ... $$ (label)  ->  $$ ... \tag{n} $$
    def tag(m: re.Match) -> str:
        return f"{m.group('indent')}\\tag{{{equations[m.group('label')][1]}}}\n{m.group('indent')}$$"

    text = _EQ_LABEL.sub(tag, text)
    text = _TARGET.sub("", text)

    def eq(label: str) -> str:
        where, n = equations[label]
        return f"({n})" if where == chapter else f"eq. ({n}) of chapter {where}"

    def cite(keys: str, textual: bool) -> str:
        parts = []
        for key in (k.strip() for k in keys.split(",")):
            entry = bib[key]
            cited.append(key) if key not in cited else None
            parts.append(f"{_authors_short(entry)} ({entry['year']})" if textual
                         else f"{_authors_short(entry)}, {entry['year']}")
        return "; ".join(parts) if textual else "(" + "; ".join(parts) + ")"

    text = re.sub(r"\(\{eq\}`([^`]*)`\)", lambda m: eq(m.group(1)) if equations[m.group(1)][0] == chapter
                  else f"({eq(m.group(1))})", text)

    def role(m: re.Match) -> str:
        name, body = m.group("role"), m.group("body")
        if name == "eq":
            return eq(body)
        if name.startswith("cite"):
            return cite(body, textual=name in {"cite:t", "citet", "cite:ts"})
        if name == "math":
            return f"${body}$"
        shown = re.match(r"^(.*?)\s*<([^>]*)>$", body, re.S)  # {ref}`text <label>`
        if name == "doc" and files:  # a chapter's {doc}`text <../book/page>`
            page = posixpath.normpath(posixpath.join("chapters", shown.group(2) if shown else body))
            return f"[{shown.group(1) if shown else body}]({files}/{page}.md)"
        return shown.group(1) if shown else body.lstrip("!~")

    return _ROLE.sub(role, text)


def references(cited: list[str], bib: dict[str, dict[str, str]]) -> str:
    """The References cell of a notebook: the cited entries, by first author's surname and year."""
    refs = sorted(cited, key=lambda key: (_surnames(bib[key])[0], bib[key].get("year", "")))
    return "## References\n\n" + "\n".join(f"- {_reference(bib[key])}" for key in refs)
