"""python -m analysis.index DIR... [--readme FILE]: the table of studies and their verdicts, from reports.

Reads `DIR/report/verdicts.json` of each study directory (written by `python -m analysis.report DIR`)
and prints a Markdown table: study, variant, each criterion's claim and verdict, seeds per condition,
the sweep's wall time and the code version of the runs. With `--readme FILE` the table replaces the
text between the lines `<!-- studies:begin -->` and `<!-- studies:end -->` of FILE (both must exist),
so that a README's headline column is generated from runs, never typed.
"""

import argparse
import json
import sys
from pathlib import Path

from research.core.errors import UserError

BEGIN, END = "<!-- studies:begin -->", "<!-- studies:end -->"
MARK = {"holds": "✔ holds", "fails": "✘ fails", "inconclusive": "? inconclusive",
        "not measured": "– not measured"}


def _minutes(seconds) -> str:
  if not isinstance(seconds, int | float):
    return "not recorded"
  return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def load(directory: Path) -> dict:
  path = Path(directory) / "report" / "verdicts.json"
  if not path.is_file():
    raise UserError(f"{path} not found; write the report first: python -m analysis.report {directory}")
  try:
    record = json.loads(path.read_text())
  except ValueError as e:
    raise UserError(f"{path} is not valid JSON ({e}); rewrite it: python -m analysis.report "
                    f"{directory}") from None
  if not isinstance(record, dict) or not isinstance(record.get("verdicts"), list):
    raise UserError(f"{path} has no list of verdicts; rewrite it: python -m analysis.report {directory}")
  if record.get("unfinished"):
    raise UserError(f"{directory}: {len(record['unfinished'])} run(s) had not finished when the report was "
                    f"written ({record['unfinished'][0]}, ...); finish the sweep and rewrite the report")
  return record


def table(records: list[dict]) -> str:
  """One row per study; the verdicts cell lists each criterion (and scope) with its verdict."""
  lines = ["| study | criteria: claim → verdict (measured) | seeds per condition | sweep wall time | code |",
           "| --- | --- | --- | --- | --- |"]
  for r in records:
    items = []
    for v in r["verdicts"]:
      scope = f" [{v.get('scope')}]" if v.get("scope") else ""
      mark = MARK.get(v.get("verdict"), v.get("verdict"))
      items.append(f"**{v.get('id')}**{scope}: {v.get('claim')} → **{mark}** ({v.get('measured')})")
    counts = {k: sum(v.get("verdict") == k for v in r["verdicts"]) for k in MARK}
    tally = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    verdicts = (f"*{tally}*<br>" if tally else "") + "<br>".join(_cell(i) for i in items) \
        or "no pre-registered criteria recorded"
    seeds = r.get("seeds_min"), r.get("seeds_max")
    seeds = f"{seeds[0]}" if seeds[0] == seeds[1] else f"{seeds[0]}-{seeds[1]}"
    code = ", ".join(c[:12] for c in r.get("code_versions") or []) or "not recorded"
    name = f"`{r.get('study') or r.get('template')}`" + (f" ({r['variant']})" if r.get("variant") else "")
    lines.append(f"| {name} | {verdicts} | {seeds} | {_minutes(r.get('wall_time_s'))} | {code} |")
  return "\n".join(lines) + "\n\n" + totals(records) + "\n"


def totals(records: list[dict]) -> str:
  """The line under the table: how many studies hold every criterion, how many hold some, and the sum of
  the sweeps' wall times (with how many studies recorded none)."""
  judged = [r for r in records if r["verdicts"]]
  every = [r for r in judged if all(v.get("verdict") == "holds" for v in r["verdicts"])]
  some = [r for r in judged if r not in every and any(v.get("verdict") == "holds" for v in r["verdicts"])]
  walls = [r.get("wall_time_s") for r in records]
  known = [w for w in walls if isinstance(w, int | float)]
  text = (f"{len(every)} of {len(records)} studies hold every criterion, {len(some)} more hold some; the "
          f"sweeps' wall times sum to {_minutes(sum(known))}")
  missing = len(walls) - len(known)
  return text + (f" ({missing} study/studies recorded none)." if missing else ".")


def replace_between_markers(text: str, block: str, where: str) -> str:
  if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
    raise UserError(f"{where} needs exactly one line {BEGIN} followed by one line {END}")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.index", description=__doc__.split("\n")[0])
  parser.add_argument("directories", nargs="+", help="study directories with a report/ folder")
  parser.add_argument("--readme", default=None, help="a Markdown file whose marked block is replaced")
  args = parser.parse_args(argv)
  try:
    block = table([load(Path(d)) for d in args.directories])
    if args.readme is None:
      print(block, end="")
      return 0
    path = Path(args.readme)
    if not path.is_file():
      raise UserError(f"{path} not found (--readme takes an existing Markdown file)")
    new = replace_between_markers(path.read_text(), block, str(path))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new)
    tmp.replace(path)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{args.readme}: {len(args.directories)} studies")
  return 0


if __name__ == "__main__":
  sys.exit(main())
