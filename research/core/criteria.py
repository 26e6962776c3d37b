"""Pre-registered criteria: a study's published claim as testable statements, fixed before it runs.

A study config declares `get_criteria(variant) -> list[dict]`; `research.sweeps` checks them with
`parse` and records them in `sweep.json` (`criteria`, with the time) before the first trial starts, and
the report judges them from the run directories (`analysis.criteria`). A criterion names:

  id         a short name, unique in the study (`lambda_max_ratio`)
  claim      the sentence it tests ("Without BatchNorm, lambda_max at the end of training is higher")
  source     where the claim is published ("Santurkar et al. 2018, NeurIPS, Fig. 4")
  quantity   a column of the report's runs table: a final metric (`curv/lambda_max`, `test/accuracy`)
             or a quantity the study's template derives per run (`eos/window_fraction`)
  compare    "ratio"       mean-of-logs ratio a / b of two groups (Welch t-interval on the logs; null 1)
             "difference"  mean(a) - mean(b) (Welch t-interval; null 0)
             "mean"        the mean of group a (t-interval) against `threshold`
             "every"       every run of group a against `threshold` (no interval: counts)
             "kendall"     Kendall's tau of the quantity with `by` over group a's runs: a column of the
                           runs table when it has one (a measured quantity such as `gap/accuracy`), else
                           a numeric config key (null 0; judged by its two-sided p-value at 1 - level)
  expected   ">", "<" or "=" (then `margin` is the half-width of the band around `threshold`
             inside which the claim "no difference" holds)
  a, b       the groups: {config key: value} that every run of the group matches (`{}`: every run)
  threshold  what the estimate is compared with (default: the null of `compare`)
  each       optional config key: the criterion is judged once per value of it (e.g. per step size)
  diverged   optional number: the value a run that diverged counts as, whatever it logged before it
             diverged (e.g. 0.1, chance accuracy of 10 classes, for "does not train at this step size");
             without it a diverged run keeps what it logged, usually nothing, and is then left out
  tune       optional {"key": config key, "by": quantity}: each group is first narrowed to the runs at
             the value of `key` whose runs have the largest mean of `by` (e.g. each optimizer at its
             step size of best mean validation accuracy over its seeds, as Wilson et al. 2017 tune); the
             criterion is then judged on those runs

Why here: the sweep (research) records the criteria and `analysis` judges them, and both may import
only this leaf; neither owns the schema.
"""

import dataclasses
import math

from research.core.errors import UserError, choices_message

COMPARES = ("ratio", "difference", "mean", "every", "kendall")
EXPECTED = (">", "<", "=")
NULLS = {"ratio": 1.0, "difference": 0.0, "mean": 0.0, "every": 0.0, "kendall": 0.0}
TWO_GROUPS = ("ratio", "difference")
REQUIRED = ("id", "claim", "source", "quantity", "compare", "expected")
OPTIONAL = ("a", "b", "threshold", "margin", "each", "by", "diverged", "tune")


@dataclasses.dataclass(frozen=True)
class Criterion:
  id: str
  claim: str
  source: str
  quantity: str
  compare: str
  expected: str
  a: dict
  b: dict | None = None
  threshold: float | None = None
  margin: float | None = None
  each: str | None = None
  by: str | None = None
  diverged: float | None = None
  tune: dict | None = None

  @property
  def null(self) -> float:
    return NULLS[self.compare]

  @property
  def reference(self) -> float:
    """The value the estimate is compared with: `threshold`, else the null of `compare`."""
    return self.null if self.threshold is None else self.threshold

  def to_dict(self) -> dict:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _group(spec, name: str, where: str) -> dict:
  if spec is None:
    return {}
  if not isinstance(spec, dict) or not all(isinstance(k, str) for k in spec):
    raise UserError(f"{where}: `{name}` must map config keys to values, got {spec!r}")
  return dict(spec)


def _number(value, name: str, where: str) -> float | None:
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
    raise UserError(f"{where}: `{name}` must be a finite number, got {value!r}")
  return float(value)


def _tune(spec, where: str) -> dict | None:
  if spec is None:
    return None
  if not (isinstance(spec, dict) and set(spec) == {"key", "by"} and all(isinstance(v, str) and v
                                                                         for v in spec.values())):
    raise UserError(f"{where}: `tune` must be {{'key': a config key, 'by': a quantity}}, got {spec!r}")
  return dict(spec)


def parse_one(spec: dict, where: str = "criterion") -> Criterion:
  """A checked `Criterion` from its dict; a one-line `UserError` names the first problem."""
  if not isinstance(spec, dict):
    raise UserError(f"{where} must be a dict, got {type(spec).__name__}")
  unknown = sorted(set(spec) - set(REQUIRED) - set(OPTIONAL))
  if unknown:
    raise UserError(f"{where}: unknown field {unknown[0]!r}; valid fields: {', '.join(REQUIRED + OPTIONAL)}")
  missing = [k for k in REQUIRED if not spec.get(k)]
  if missing:
    raise UserError(f"{where}: missing field {missing[0]!r} (required: {', '.join(REQUIRED)})")
  where = f"{where} {spec['id']!r}"
  for k in ("id", "claim", "source", "quantity"):
    if not isinstance(spec[k], str):
      raise UserError(f"{where}: `{k}` must be a string, got {spec[k]!r}")
  if spec["compare"] not in COMPARES:
    raise UserError(f"{where}: " + choices_message("compare", spec["compare"], COMPARES))
  if spec["expected"] not in EXPECTED:
    raise UserError(f"{where}: " + choices_message("expected", spec["expected"], EXPECTED))
  c = Criterion(spec["id"], spec["claim"], spec["source"], spec["quantity"], spec["compare"],
                spec["expected"], _group(spec.get("a"), "a", where),
                _group(spec.get("b"), "b", where) if spec["compare"] in TWO_GROUPS else None,
                _number(spec.get("threshold"), "threshold", where),
                _number(spec.get("margin"), "margin", where), spec.get("each"), spec.get("by"),
                _number(spec.get("diverged"), "diverged", where), _tune(spec.get("tune"), where))
  if c.compare in TWO_GROUPS and not spec.get("b") and spec.get("b") != {}:
    raise UserError(f"{where}: compare={c.compare} needs the second group `b`")
  if c.expected == "=" and (c.margin is None or c.margin <= 0):
    raise UserError(f"{where}: expected '=' needs a positive `margin` (the band of 'no difference')")
  if c.compare == "kendall" and not isinstance(c.by, str):
    raise UserError(f"{where}: compare=kendall needs `by`, the config key to rank against")
  if c.compare == "every" and c.threshold is None:
    raise UserError(f"{where}: compare=every needs a `threshold`")
  if c.each is not None and not isinstance(c.each, str):
    raise UserError(f"{where}: `each` must be a config key, got {c.each!r}")
  return c


def parse(specs) -> list[Criterion]:
  """Checked criteria from a list of dicts (ids unique)."""
  if not isinstance(specs, list | tuple):
    raise UserError(f"criteria must be a list of dicts, got {type(specs).__name__}")
  out = [parse_one(s, f"criterion {i}") for i, s in enumerate(specs)]
  ids = [c.id for c in out]
  dupes = sorted({i for i in ids if ids.count(i) > 1})
  if dupes:
    raise UserError(f"criterion id {dupes[0]!r} is used twice; ids must be unique")
  return out
