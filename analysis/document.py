"""The report as data and its rendering: blocks (paragraphs, bullets, code, figures, tables, nested
sections), findings, the report itself, Markdown and self-contained HTML, and the formatting of numbers
in sentences. A leaf: every template and `analysis.report` use it; it imports only `analysis.tables`.
"""

import base64
import dataclasses
import html
import math
import re
from collections.abc import Callable
from pathlib import Path

from analysis import tables


@dataclasses.dataclass
class Figure:
  """A figure file (PNG; the PDF sits next to it) and its caption; `number` is set when rendered."""
  name: str
  path: Path
  caption: str
  number: int = 0


@dataclasses.dataclass
class TableBlock:
  name: str
  table: tables.Table


@dataclasses.dataclass
class Code:
  text: str


@dataclasses.dataclass
class Finding:
  """A sentence stating a result and the numbers it states (for checks and findings.json)."""
  text: str
  values: dict


@dataclasses.dataclass
class Section:
  title: str
  blocks: list  # of str (a Markdown paragraph), list[str] (bullets), Code, Figure, TableBlock, Section


@dataclasses.dataclass
class Report:
  title: str
  question: str
  template: str
  sections: list[Section]
  findings: list[Finding]
  problems: list
  verdicts: list = dataclasses.field(default_factory=list)  # analysis.criteria.Verdict, one per criterion

  def figures(self) -> list[Figure]:
    out = []

    def walk(blocks):
      for b in blocks:
        if isinstance(b, Figure):
          out.append(b)
        elif isinstance(b, Section):
          walk(b.blocks)

    walk(self.sections)
    return out

  def table_blocks(self) -> list[TableBlock]:
    out = []

    def walk(blocks):
      for b in blocks:
        if isinstance(b, TableBlock):
          out.append(b)
        elif isinstance(b, Section):
          walk(b.blocks)

    walk(self.sections)
    return out


def _number(report: Report) -> None:
  for i, f in enumerate(report.figures(), start=1):
    f.number = i


def to_markdown(report: Report, out_dir: Path) -> str:
  """report.md text; figures are linked relative to `out_dir`."""
  _number(report)
  lines = [f"# {report.title}", "", f"**Question.** {report.question}", ""]

  def render(blocks, level):
    for b in blocks:
      if isinstance(b, Section):
        lines.extend([f"{'#' * level} {b.title}", ""])
        render(b.blocks, level + 1)
      elif isinstance(b, Figure):
        rel = b.path.relative_to(out_dir) if b.path.is_relative_to(out_dir) else b.path
        lines.extend([f"![Figure {b.number}]({rel.as_posix()})", "",
                      f"*Figure {b.number}. {b.caption}* (`{rel.as_posix()}`)", ""])
      elif isinstance(b, TableBlock):
        lines.extend([tables.markdown(b.table), ""])
      elif isinstance(b, Code):
        lines.extend(["```bash", b.text.rstrip(), "```", ""])
      elif isinstance(b, list):
        lines.extend([f"- {item}" for item in b] + [""])
      else:
        lines.extend([str(b), ""])

  render(report.sections, 2)
  return "\n".join(lines).rstrip() + "\n"


def _inline(text: str) -> str:
  """Minimal Markdown inline markup (code, bold, italics) to HTML, after escaping."""
  parts = re.split(r"(`[^`]*`)", str(text))
  out = []
  for p in parts:
    if p.startswith("`") and p.endswith("`") and len(p) >= 2:
      out.append(f"<code>{html.escape(p[1:-1])}</code>")
      continue
    p = html.escape(p)
    p = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", p)
    p = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", p)
    out.append(p)
  return "".join(out)


_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;line-height:1.5;color:#222}
h1{font-size:1.6rem}h2{font-size:1.3rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.1rem}figure{margin:1.2rem 0}figure img{max-width:100%;height:auto}
figcaption{font-size:.9rem;color:#444}table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{padding:.25rem .6rem}thead th{border-top:2px solid #222;border-bottom:1px solid #222}
tbody tr:last-child td{border-bottom:2px solid #222}td.r,th.r{text-align:right}caption{caption-side:bottom;
font-size:.85rem;color:#444;text-align:left;padding-top:.3rem}pre{background:#f6f6f6;padding:.6rem;
overflow-x:auto;font-size:.85rem}code{font-size:.9em}
"""


def _html_table(t: tables.Table) -> str:
  align = t.align or "l" + "r" * (len(t.header) - 1)
  cls = lambda j: ' class="r"' if j < len(align) and align[j] == "r" else ""
  head = "".join(f"<th{cls(j)}>{_inline(h)}</th>" for j, h in enumerate(t.header))
  body = []
  for row, bold in zip(t.rows, t.bold):
    cells = "".join(f"<td{cls(j)}>{'<strong>' if b else ''}{html.escape(c)}{'</strong>' if b else ''}</td>"
                    for j, (c, b) in enumerate(zip(row, bold)))
    body.append(f"<tr>{cells}</tr>")
  cap = f"<caption>{_inline(t.caption)}</caption>" if t.caption else ""
  return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(report: Report) -> str:
  """A self-contained HTML page (figures inlined as base64 PNG)."""
  _number(report)
  out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{html.escape(report.title)}</h1>",
         f"<p><strong>Question.</strong> {_inline(report.question)}</p>"]

  def render(blocks, level):
    for b in blocks:
      if isinstance(b, Section):
        out.append(f"<h{level}>{html.escape(b.title)}</h{level}>")
        render(b.blocks, min(level + 1, 6))
      elif isinstance(b, Figure):
        data = base64.b64encode(b.path.read_bytes()).decode("ascii")
        out.append(f'<figure id="fig{b.number}"><img alt="Figure {b.number}" '
                   f'src="data:image/png;base64,{data}"><figcaption><strong>Figure {b.number}.</strong> '
                   f"{_inline(b.caption)}</figcaption></figure>")
      elif isinstance(b, TableBlock):
        out.append(_html_table(b.table))
      elif isinstance(b, Code):
        out.append(f"<pre><code>{html.escape(b.text.rstrip())}</code></pre>")
      elif isinstance(b, list):
        out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b) + "</ul>")
      else:
        out.append(f"<p>{_inline(b)}</p>")

  render(report.sections, 2)
  out.append("</body></html>")
  return "\n".join(out) + "\n"


# Numbers in sentences.

def pct(x: float) -> str:
  return f"{100 * x:.2f}%"


def num(x: float) -> str:
  if not math.isfinite(x):
    return "n/a"
  return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def ci_text(lo: float, hi: float, fmt: Callable[[float], str], suffix: str = "") -> str:
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return "no interval with fewer than 2 seeds"
  return f"95% CI {fmt(lo)}–{fmt(hi)}{suffix}"


def seeds_text(n: int) -> str:
  return f"{n} seed" + ("" if n == 1 else "s")


def distinct(values) -> list:
  out = []
  for v in values:
    v = tuple(v) if isinstance(v, list) else v
    if v not in out:
      out.append(v)
  return out


def show(values: list, fmt=str) -> str:
  vals = distinct(values)
  if not vals:
    return "n/a"
  if len(vals) == 1:
    return fmt(vals[0])
  return "varies: " + ", ".join(fmt(v) for v in vals)
