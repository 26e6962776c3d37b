"""python -m analysis.report DIR [--out OUT]: the paper-style report of a run, a sweep or a study.

Writes, under OUT (default DIR/report):
  report.md            title and question, setup (from the configs and meta.json), results (figures,
                       tables, captions), findings computed from the runs, comparison with the published
                       result, limitations, the commands to reproduce, and what was missing or unreadable
  report.html          the same, self-contained (figures embedded as base64 PNG)
  figures/*.png, .pdf  every figure (PDF for papers)
  tables/*.md, .tex    every table (LaTeX booktabs)
  findings.json        each finding's sentence and the numbers in it
  verdicts.json        the verdict of each pre-registered criterion, with the study, its variant, seeds,
                       runtime and code version (what `python -m analysis.index` tabulates)

The sections, in this order: Verdicts (the study's pre-registered criteria, recorded in sweep.json
before the runs, judged by `analysis.criteria`), Setup, Results, Findings, Comparison with the
published result, Limitations (analysis.sections and the study's template), Reproduce (the command
lines the run directories record) and Missing or unreadable. The results depend on the study:
`config.study` is a key into `analysis.studies.TEMPLATES` and nothing else; an unknown or mixed study
gets the generic report. Damaged, missing or mistyped files and fields never stop the report: they are
listed in its last section. Nothing a run directory names is executed.
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from analysis import criteria, runs, sections, tables
from analysis.document import Report, Section, TableBlock, to_html, to_markdown
from analysis.results import Context, Parts
from analysis.studies import GENERIC, TEMPLATES
from research.core.errors import UserError, choices_message


def _failure(e: Exception) -> str:
  return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"


def _guarded(title: str, make: Callable[[], Section], problems: list) -> Section:
  """`make()`, or a section saying it could not be built (a report is never a crash)."""
  try:
    return make()
  except Exception as e:  # a field of a type no reader expected: report it, keep the rest
    problems.append(runs.Problem("report", title, f"not built ({_failure(e)})"))
    return Section(title, [f"Could not be built from these runs ({_failure(e)})."])


def _template_parts(study: runs.Study, out: Path, name: str, problems: list, notes: list):
  """(template, parts): the named study's template if it exists, applies and runs, else the generic
  one, with notes saying why."""
  chosen = TEMPLATES.get(name)
  if chosen is None:
    notes.append(f"No report template for study `{name}`; this is the generic report "
                 f"(templates: {', '.join(sorted(TEMPLATES))}).")
    chosen = GENERIC
  for template in dict.fromkeys([chosen, GENERIC]):
    try:
      reason = template.applies(Context.of(study, out))
      if reason is not None:
        notes.append(f"The `{template.name}` template does not apply ({reason}); this is the generic report.")
        continue
      return template, template(study, out)
    except Exception as e:  # mistyped fields a template did not expect: say so, fall back
      problems.append(runs.Problem("report", f"the {template.name} template", f"failed ({_failure(e)})"))
      if template is not GENERIC:
        notes.append(f"The `{template.name}` template failed on these runs; this is the generic report.")
  results = [Section("Results", ["The results could not be computed from these runs (see Missing or "
                                 "unreadable)."])]
  return GENERIC, Parts(results, [], [], [], [])


def build(study: runs.Study, out: Path, template: str | None = None) -> Report:
  """The report of a loaded study (figures are drawn into out/figures); `study` is not changed."""
  if template is not None and template not in TEMPLATES:
    raise UserError(choices_message("template", template, sorted(TEMPLATES)))
  out = Path(out)
  problems: list = []
  fields = sections.Fields()
  notes: list[str] = []
  unfinished = [r for r in study.runs if r.status in runs.UNFINISHED]
  if unfinished:  # a run still going (or failed) has no final numbers: its last records are not the end
    problems += [runs.Problem(r.name, "meta.json", f"status {r.status}: not finished, left out of the report")
                 for r in unfinished]
    notes.append(f"{len(unfinished)} of {len(study.runs)} runs have not finished and are left out.")
    study = dataclasses.replace(study, runs=[r for r in study.runs if r.status not in runs.UNFINISHED])
  name = template or study.study or "generic"
  if not study.runs:
    chosen, parts = GENERIC, Parts([Section("Results", ["No run could be read."])], [], ["No runs."], [], [])
  else:
    chosen, parts = _template_parts(study, out, name, problems, notes)
  if not study.study and len({r.study for r in study.runs}) > 1:
    notes.append("The runs belong to different studies (`config.study`); this is the generic report.")
  ctx = Context.of(study, out)
  body = []
  verdicts = []
  if study.runs:
    body.append(_guarded("Verdicts", lambda: _verdict_section(study, ctx, parts, verdicts, problems),
                         problems))
  if study.runs:
    body.append(_guarded("Setup", lambda: sections.setup_section(ctx, fields), problems))
  body += parts.results
  body.append(Section("Findings", [[f.text for f in parts.findings] if parts.findings else
                                   "No finding: no run has a readable test accuracy."]))
  body.append(Section("Comparison with the published result", parts.comparison))
  limitations = parts.limitations
  if study.runs:
    try:
      limitations = sections.common_limitations(ctx, fields) + limitations
    except Exception as e:  # as _guarded
      problems.append(runs.Problem("report", "Limitations", f"not all stated ({_failure(e)})"))
  body.append(Section("Limitations", [limitations] if limitations else ["None recorded."]))
  body.append(_guarded("Reproduce", lambda: sections.reproduce_section(ctx, fields), problems))
  problems = list(dict.fromkeys(study.problems + [p for r in study.runs for p in r.problems]
                                + parts.problems + fields.problems() + problems))
  body.append(sections.missing_section(problems))
  root = study.root.resolve().name
  title = f"{chosen.title} study: {root}" if chosen is not GENERIC else f"Report: {root}"
  question = chosen.question + ("" if not notes else " " + " ".join(notes))
  return Report(title, question, chosen.name, body, parts.findings, problems, verdicts)


def _verdict_section(study: runs.Study, ctx: Context, parts: Parts, verdicts: list,
                     problems: list) -> Section:
  """The Verdicts section (first in the report), filling `verdicts`."""
  recorded, bad = criteria.recorded(study)
  problems += bad
  if not recorded:
    return Section("Verdicts", ["No pre-registered criteria are recorded for these runs (a sweep records its "
                                "config's `get_criteria` in sweep.json before the first trial)."])
  table = ctx.table.copy()
  for run, quantities in (parts.quantities or {}).items():
    for q, v in quantities.items():
      if q not in table.columns:
        table[q] = float("nan")
      table.loc[table["run"] == run, q] = v
  verdicts += criteria.judge(recorded, study, table)
  when = (study.index or {}).get("criteria_registered")
  changes = [c for c in (study.index or {}).get("changes_after_runs") or [] if isinstance(c, str)]
  blocks = [
      "The published claims this study tests, as criteria registered "
      f"{'on ' + str(when) + ' ' if when else ''}before this sweep's first run "
      f"({criteria.summary(verdicts)}).",
      TableBlock("verdicts", criteria.verdict_table(verdicts))]
  if changes:
    blocks += ["**Changed after earlier runs of this study** (stated by the study config and recorded with "
               "the criteria before this sweep ran; read the verdicts with it in mind):", changes]
  return Section("Verdicts", blocks)


@dataclasses.dataclass
class Written:
  report: Report
  markdown: Path
  html: Path
  figures: list[Path]
  tables: list[Path]
  findings: Path


def write_report(directory: str | Path, out: str | Path | None = None, *,
                 template: str | None = None) -> Written:
  """Builds the report of `directory` (a run, a sweep or a folder of runs) and writes it under `out`
  (default `directory/report`). `template` forces a study template (default: from `config.study`)."""
  directory = Path(directory)
  study = runs.load(directory)
  out = Path(out) if out is not None else directory / "report"
  out.mkdir(parents=True, exist_ok=True)
  report = build(study, out, template=template)
  table_paths = []
  (out / "tables").mkdir(exist_ok=True)
  for tb in report.table_blocks():
    for suffix, text in ((".md", tables.markdown(tb.table)),
                         (".tex", tables.latex(tb.table, label=f"tab:{tb.name}"))):
      p = out / "tables" / f"{tb.name}{suffix}"
      p.write_text(text)
      table_paths.append(p)
  md = out / "report.md"
  md.write_text(to_markdown(report, out))
  page = out / "report.html"
  page.write_text(to_html(report))
  findings = out / "findings.json"
  records = [dataclasses.asdict(f) for f in report.findings]
  findings.write_text(json.dumps(records, indent=1, default=str) + "\n")
  idx = study.index or {}
  unfinished = [r.name for r in study.runs if r.status in runs.UNFINISHED]
  summary = {"study": study.study, "template": report.template, "directory": str(directory),
             "variant": idx.get("variant"), "criteria_registered": idx.get("criteria_registered"),
             "verdicts": [v.to_dict() for v in report.verdicts], "unfinished": unfinished} \
      | runs.provenance(dataclasses.replace(study, runs=[r for r in study.runs if r.name not in unfinished]))
  (out / "verdicts.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
  figures = [f.path for f in report.figures()]
  _remove_stale(out / "figures", {Path(f).stem for f in figures}, (".png", ".pdf"))
  _remove_stale(out / "tables", {p.stem for p in table_paths}, (".md", ".tex"))
  return Written(report, md, page, figures, table_paths, findings)


def _remove_stale(folder: Path, written: set[str], suffixes: tuple[str, ...]) -> None:
  """Figures or tables an earlier report of the same folder wrote and this one did not (a figure whose
  data is gone would otherwise sit next to the report as if it were part of it)."""
  if folder.is_dir():
    for p in folder.iterdir():
      if p.is_file() and p.suffix in suffixes and p.stem not in written:
        p.unlink()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.split("\n")[0])
  parser.add_argument("directory", help="a run directory, a sweep directory or a folder of runs")
  parser.add_argument("--out", default=None, help="output folder (default DIR/report)")
  parser.add_argument("--template", default=None, help="study template (default: config.study)")
  args = parser.parse_args(argv)
  try:
    written = write_report(args.directory, args.out, template=args.template)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  r = written.report
  print(f"{written.markdown} ({r.template} template, {len(written.figures)} figures, "
        f"{len(r.findings)} findings, {len(r.problems)} problems)")
  print(written.html)
  return 0


if __name__ == "__main__":
  sys.exit(main())
