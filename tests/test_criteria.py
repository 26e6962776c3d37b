"""Pre-registered criteria: the schema (research.core.criteria), their recording by a sweep before any
trial, their judgement in the report (analysis.criteria) and the generated index of studies."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from analysis import criteria as judging
from analysis import index, report, runs
from research.core import criteria
from research.core.errors import UserError
from research.sweeps import runner

RATIO = {"id": "sharper", "claim": "Without BatchNorm lambda_max is higher",
         "source": "Santurkar et al. 2018",
         "quantity": "curv/lambda_max", "compare": "ratio", "expected": ">",
         "a": {"model.knobs.norm": "none"}, "b": {"model.knobs.norm": "batch"}}


@pytest.mark.parametrize("change, message", [
    ({"compare": "median"}, "compare"),
    ({"expected": ">="}, "expected"),
    ({"b": None}, "needs the second group"),
    ({"expected": "="}, "margin"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ({"claim": ""}, "missing field 'claim'"),
    ({"threshold": float("nan")}, "finite number"),
    ({"compare": "kendall"}, "needs `by`"),
])
def test_a_bad_criterion_is_one_line_naming_the_problem(change, message):
  spec = {k: v for k, v in (RATIO | change).items() if v is not None}
  with pytest.raises(UserError, match=message) as e:
    criteria.parse([spec])
  assert "\n" not in str(e.value)


def test_duplicate_ids_are_refused():
  with pytest.raises(UserError, match="used twice"):
    criteria.parse([RATIO, RATIO])


def test_a_sweep_records_its_criteria_before_any_trial(tmp_path):
  """load_definition is what run_sweep writes to sweep.json before launching: the criteria are in it,
  checked, with the time they were registered."""
  cfg = tmp_path / "study.py"
  cfg.write_text(
      "from research import sweeps\nfrom research.training import default_config\n"
      "def get_config(arg=None):\n  c = default_config()\n  c.study = 'toy'\n  return c\n"
      "def get_sweep(arg=None):\n  return sweeps.seeds(2)\n"
      f"def get_criteria(arg=None):\n  return [{RATIO!r}]\n")
  index_ = runner.load_definition(str(cfg))
  assert index_["criteria"] == [criteria.parse([RATIO])[0].to_dict()]
  assert index_["criteria_registered"]
  cfg.write_text(cfg.read_text().replace("'ratio'", "'ratios'"))
  with pytest.raises(UserError, match="compare"):
    runner.load_definition(str(cfg))


def test_changes_after_runs_are_recorded_and_printed_by_the_verdicts(tmp_path):
  """A config's `get_changes_after_runs` is recorded in sweep.json with the criteria, and the report
  prints it right after the verdict table; a non-list is a one-line error."""
  cfg = tmp_path / "study.py"
  body = ("from research import sweeps\nfrom research.training import default_config\n"
          "def get_config(arg=None):\n  c = default_config()\n  c.study = 'toy'\n  return c\n"
          "def get_sweep(arg=None):\n  return sweeps.seeds(2)\n"
          f"def get_criteria(arg=None):\n  return [{RATIO!r}]\n")
  cfg.write_text(body + "def get_changes_after_runs(arg=None):\n  return ['The network, after run abc.']\n")
  assert runner.load_definition(str(cfg))["changes_after_runs"] == ["The network, after run abc."]
  cfg.write_text(body + "def get_changes_after_runs(arg=None):\n  return 'not a list'\n")
  with pytest.raises(UserError, match="list of sentences") as e:
    runner.load_definition(str(cfg))
  assert "\n" not in str(e.value)
  root = _study(tmp_path / "s", {"none": [10.0, 11.0, 12.0], "batch": [5.0, 5.5, 6.0]}, [RATIO])
  index_ = json.loads((root / "sweep.json").read_text())
  change = {"changes_after_runs": ["The network, after run abc."]}
  (root / "sweep.json").write_text(json.dumps(index_ | change))
  md = report.write_report(root).markdown.read_text()
  verdicts = md[md.index("## Verdicts"):md.index("## ", md.index("## Verdicts") + 3)]
  assert "Changed after earlier runs of this study" in verdicts
  assert "- The network, after run abc." in verdicts


def _write_run(d: Path, config: dict, final: dict, history: list[dict]) -> None:
  d.mkdir(parents=True)
  (d / "config.json").write_text(json.dumps(config))
  (d / "meta.json").write_text(json.dumps({"status": "done", "seed": config["seed"], "git": "abc123def4567"}))
  (d / "summary.json").write_text(json.dumps({"status": "done", "final": final}))
  (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history + [{"step": 100} | final]))


def _study(root: Path, values: dict, specs: list[dict]) -> Path:
  """A sweep of norm x seed whose final lambda_max and smooth/beta history are the given values."""
  trials = []
  i = 0
  for norm, lams in values.items():
    for seed, lam in enumerate(lams):
      name = f"{i:03d}-norm={norm}-seed={seed}"
      cfg = {"study": "toy", "seed": seed, "model": {"knobs": {"norm": norm}}, "schedule": {"lr": 0.1}}
      history = [{"step": 0, "smooth/beta": 1000.0}, {"step": 50, "smooth/beta": lam},
                 {"step": 100, "smooth/beta": 3 * lam}]
      _write_run(root / name, cfg, {"test/accuracy": 0.8, "curv/lambda_max": lam}, history)
      trials.append({"index": i, "name": name, "overrides": {"model.knobs.norm": norm, "seed": seed},
                     "status": "done", "started": f"2026-12-02T10:0{i}:00+00:00",
                     "ended": f"2026-12-02T10:0{i + 1}:30+00:00"})
      i += 1
  (root / "sweep.json").write_text(json.dumps({
      "study": "toy", "variant": "quick", "common_overrides": {}, "trials": trials,
      "criteria": specs, "criteria_registered": "2026-12-02T10:00:00+00:00"}))
  return root


def test_verdicts_follow_the_welch_interval_and_the_seed_count(tmp_path):
  clear = {"none": [10.0, 11.0, 12.0], "batch": [5.0, 5.5, 6.0]}
  overlapping = {"none": [10.0, 4.0], "batch": [5.0, 6.0]}
  every = RATIO | {"id": "every", "compare": "every", "threshold": 7.0, "a": {"model.knobs.norm": "none"}}
  history = RATIO | {"id": "beta", "quantity": "smooth/beta@mean"}
  for values, expected in ((clear, "holds"), (overlapping, "inconclusive")):
    root = _study(tmp_path / expected, values, [RATIO, every, history])
    study = runs.load(root)
    found = judging.judge(judging.recorded(study)[0], study, runs.runs_table(study))
    by_id = {v.criterion.id: v for v in found}
    assert by_id["sharper"].verdict == expected
    logs = {k: np.log(v) for k, v in values.items()}
    ref = scipy.stats.ttest_ind(logs["none"], logs["batch"], equal_var=False)
    assert by_id["sharper"].values["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert by_id["sharper"].values["estimate"] == pytest.approx(
        np.exp(logs["none"].mean() - logs["batch"].mean()), rel=1e-12)
    assert by_id["every"].verdict == ("holds" if min(values["none"]) > 7 else "fails")
    # @mean: the mean of the logged values after step 0 (lam and 3 lam), not the 1000 at initialization
    assert by_id["beta"].verdict == expected
    assert by_id["beta"].values["estimate"] == pytest.approx(
        np.exp(np.log(values["none"]).mean() - np.log(values["batch"]).mean()), rel=1e-12)


def test_the_report_opens_with_the_verdicts_and_the_index_is_generated_from_them(tmp_path):
  root = _study(tmp_path / "s", {"none": [10.0, 11.0, 12.0], "batch": [5.0, 5.5, 6.0]},
                [RATIO, RATIO | {"id": "lower", "expected": "<", "claim": "BatchNorm is sharper"}])
  written = report.write_report(root)
  md = written.markdown.read_text()
  first = md.index("## ")
  assert md[first:].startswith("## Verdicts")
  assert "| sharper |" in md and "**holds**" in md and "**fails**" in md
  record = json.loads((root / "report" / "verdicts.json").read_text())
  assert [v["verdict"] for v in record["verdicts"]] == ["holds", "fails"]
  assert record["seeds_min"] == record["seeds_max"] == 3 and record["wall_time_s"] == 390.0
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{index.BEGIN}\nold hand-typed table\n{index.END}\nrest\n")
  assert index.main([str(root), "--readme", str(readme)]) == 0
  text = readme.read_text()
  assert "old hand-typed" not in text and text.startswith("intro\n") and text.endswith("rest\n")
  assert "✔ holds" in text and "✘ fails" in text and "6 min 30 s" in text and "abc123def456" in text
  assert "0 of 1 studies hold every criterion, 1 more hold some; the sweeps' wall times sum to 6 min 30 s." \
      in text
  both = index.totals([record, record | {"verdicts": record["verdicts"][:1], "wall_time_s": None}])
  assert both.startswith("1 of 2 studies hold every criterion, 1 more hold some") and "(1 study" in both
  readme.write_text("no markers\n")
  assert index.main([str(root), "--readme", str(readme)]) == 2
  assert readme.read_text() == "no markers\n"


def test_a_study_without_criteria_says_so(tmp_path):
  root = _study(tmp_path / "s", {"none": [1.0, 2.0], "batch": [1.0, 2.0]}, [])
  md = report.write_report(root).markdown.read_text()
  assert "No pre-registered criteria" in md


def test_unfinished_runs_are_left_out_and_the_index_refuses_them(tmp_path):
  """A run still going has no final numbers: the report leaves it out (and says so), and a README table is
  never generated from a report written before the sweep finished."""
  root = _study(tmp_path / "s", {"none": [10.0, 11.0, 12.0], "batch": [5.0, 5.5, 6.0]}, [RATIO])
  run = next(root.glob("000-*"))
  (run / "meta.json").write_text(json.dumps({"status": "running", "seed": 0}))
  written = report.write_report(root)
  v = written.report.verdicts[0]
  assert v.values["n"] == [2, 3]  # the running none seed is not among the values
  assert "not finished" in written.markdown.read_text()
  assert json.loads((root / "report" / "verdicts.json").read_text())["unfinished"] == [run.name]
  assert index.main([str(root)]) == 2


def test_every_counts_a_diverged_run_as_failing(tmp_path):
  every = RATIO | {"id": "every", "compare": "every", "threshold": 7.0, "a": {"model.knobs.norm": "none"}}
  root = _study(tmp_path / "s", {"none": [10.0, 11.0, float("nan")], "batch": [5.0, 5.5, 6.0]}, [every])
  study = runs.load(root)
  (v,) = judging.judge(judging.recorded(study)[0], study, runs.runs_table(study))
  assert v.verdict == "fails" and v.values["passing"] == 2 and v.values["n"] == 3


def test_a_registered_diverged_value_counts_runs_that_diverged(tmp_path):
  """`diverged`: a run that diverged counts as the registered value in a difference, whatever it logged
  before diverging; without the field it keeps that last evaluation."""
  diff = RATIO | {"id": "trains", "compare": "difference", "quantity": "curv/lambda_max",
                  "a": {"model.knobs.norm": "batch"}, "b": {"model.knobs.norm": "none"}}
  counted = diff | {"id": "counted", "diverged": 0.1}
  root = _study(tmp_path / "s", {"none": [0.09, 0.5, 0.5], "batch": [0.85, 0.86, 0.84]}, [diff, counted])
  for name in ("001-norm=none-seed=1", "002-norm=none-seed=2"):  # diverged: no final metrics
    (root / name / "meta.json").write_text(json.dumps({"status": "diverged", "seed": 1}))
    (root / name / "summary.json").write_text(json.dumps({"status": "diverged", "final": {}}))
    (root / name / "metrics.jsonl").write_text(  # an evaluation before it diverged: not what counts
        json.dumps({"step": 20, "test/accuracy": 0.3, "curv/lambda_max": 0.7}) + "\n"
        + json.dumps({"step": 30, "diverged": True}) + "\n")
  study = runs.load(root)
  found = judging.judge(judging.recorded(study)[0], study, runs.runs_table(study))
  by_id = {v.criterion.id: v for v in found}
  assert by_id["trains"].values["n"] == [3, 3]  # without the field: what they logged before diverging
  assert by_id["counted"].values["n"] == [3, 3]
  ref = scipy.stats.ttest_ind([0.85, 0.86, 0.84], [0.09, 0.1, 0.1], equal_var=False)
  assert by_id["counted"].values["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
  assert by_id["counted"].verdict == "holds"
  assert "2 diverged run(s) counted as 0.1" in by_id["counted"].measured
  with pytest.raises(UserError, match="diverged"):
    criteria.parse([counted | {"diverged": "chance"}])


def test_an_inconclusive_comparison_gets_its_measured_reason(tmp_path):
  """`undecided_reasons`: the log-ratio against each group's spread of the logs, and the seeds that spread
  needs at the table's level (the normal approximation n = z^2 (s_a^2 + s_b^2) / effect^2)."""
  values = {"none": [6.0, 11.0, 8.0], "batch": [5.0, 9.0, 6.5]}
  root = _study(tmp_path / "s", values, [RATIO])
  study = runs.load(root)
  (reason,) = judging.undecided_reasons(study, runs.runs_table(study))
  la, lb = np.log(values["none"]), np.log(values["batch"])
  effect = la.mean() - lb.mean()
  need = int(np.ceil(scipy.stats.norm.ppf(0.975) ** 2 * (la.var(ddof=1) + lb.var(ddof=1)) / effect ** 2))
  assert reason.startswith(f"Measured reason, `sharper`: a log-ratio of {effect:+.2f}")
  assert f"about {need} seeds per group" in reason
  clear = _study(tmp_path / "c", {"none": [10.0, 11.0, 12.0], "batch": [5.0, 5.5, 6.0]}, [RATIO])
  study = runs.load(clear)
  assert judging.undecided_reasons(study, runs.runs_table(study)) == []  # decided: nothing to explain


def test_no_correlation_needs_an_interval_inside_the_band():
  """Kendall's tau interval by Fisher z (var 0.437 / (n - 4)); a small tau from few runs is not 'no
  correlation'."""
  lo, hi = judging.tau_interval(0.0, 16)
  half = scipy.stats.norm.ppf(0.975) * np.sqrt(0.437 / 12)
  assert (lo, hi) == pytest.approx((np.tanh(-half), np.tanh(half)), rel=1e-12)
  assert hi > 0.3  # 16 runs cannot show |tau| < 0.3
  assert judging.tau_interval(0.0, 216)[1] < 0.1
  assert all(np.isnan(judging.tau_interval(0.1, 4)))


def test_templates_judge_at_the_verdict_tables_level(tmp_path):
  """`test_level` is the level `judge` gives each test: Bonferroni over one test per criterion and `each`
  scope, `every` criteria not counted. Here 1 ratio + 1 history ratio + 3 seed scopes = 5 tests."""
  every = RATIO | {"id": "every", "compare": "every", "threshold": 7.0, "a": {"model.knobs.norm": "none"}}
  history = RATIO | {"id": "beta", "quantity": "smooth/beta@mean"}
  per_seed = RATIO | {"id": "per_seed", "each": "seed"}
  root = _study(tmp_path / "s", {"none": [10.0, 11.0, 12.0], "batch": [5.0, 5.5, 6.0]},
                [RATIO, every, history, per_seed])
  study = runs.load(root)
  assert judging.test_level(study) == pytest.approx(1 - 0.05 / 5, rel=1e-12)
  found = judging.judge(judging.recorded(study)[0], study, runs.runs_table(study))
  levels = {v.values["level"] for v in found if "level" in v.values}
  assert levels and all(lv == pytest.approx(1 - 0.05 / 5, rel=1e-12) for lv in levels)
  assert judging.test_level(runs.load(_study(tmp_path / "none", {"none": [1.0], "batch": [1.0]}, []))) == 0.95


def test_tune_judges_each_group_at_its_best_mean_of_the_tuning_quantity(tmp_path):
  """`tune`: each group is narrowed to the value of its key with the largest mean of `by` over its seeds
  (here validation accuracy per step size), and the criterion is the Welch test of those runs alone."""
  valid = {("none", 0.1): [0.70, 0.72, 0.71], ("none", 0.2): [0.80, 0.79, 0.81],
           ("batch", 0.1): [0.83, 0.84, 0.82], ("batch", 0.2): [0.60, 0.90, 0.61]}  # 0.2: mean 0.703
  test = {("none", 0.1): [0.5, 0.5, 0.5], ("none", 0.2): [0.76, 0.75, 0.77],
          ("batch", 0.1): [0.80, 0.81, 0.79], ("batch", 0.2): [0.99, 0.99, 0.99]}
  root, trials, i = tmp_path / "s", [], 0
  for (norm, lr), accs in valid.items():
    for seed, acc in enumerate(accs):
      name = f"{i:03d}-norm={norm}-lr={lr}-seed={seed}"
      cfg = {"study": "toy", "seed": seed, "model": {"knobs": {"norm": norm}}, "schedule": {"lr": lr}}
      _write_run(root / name, cfg, {"valid/accuracy": acc, "test/accuracy": test[norm, lr][seed]}, [])
      trials.append({"index": i, "name": name, "status": "done",
                     "overrides": {"model.knobs.norm": norm, "schedule.lr": lr, "seed": seed}})
      i += 1
  spec = RATIO | {"id": "tuned", "quantity": "test/accuracy", "compare": "difference",
                  "a": {"model.knobs.norm": "batch"}, "b": {"model.knobs.norm": "none"},
                  "tune": {"key": "schedule.lr", "by": "valid/accuracy"}}
  (root / "sweep.json").write_text(json.dumps({"study": "toy", "variant": "quick", "common_overrides": {},
                                               "trials": trials, "criteria": [spec]}))
  study = runs.load(root)
  (v,) = judging.judge(judging.recorded(study)[0], study, runs.runs_table(study))
  ref = scipy.stats.ttest_ind(test["batch", 0.1], test["none", 0.2], equal_var=False)
  assert v.values["p_value"] == pytest.approx(ref.pvalue, rel=1e-9) and v.values["n"] == [3, 3]
  assert v.values["tuned"]["a"]["chosen"] == 0.1 and v.values["tuned"]["b"]["chosen"] == 0.2
  assert "a at lr=0.1 (of 0.1, 0.2), b at lr=0.2 (of 0.1, 0.2)" in v.measured
  for bad in ({"key": "schedule.lr"}, {"key": "schedule.lr", "by": ""}, "schedule.lr"):
    with pytest.raises(UserError, match="`tune` must be"):
      criteria.parse([spec | {"tune": bad}])
  grid = {"key": "schedule.lr", "by": "valid/accuracy", "means": {"0.05": 0.7, "0.1": 0.8, "0.2": 0.9}}
  edge = "lr=0.2 (of 0.05, 0.1, 0.2, the largest: the grid's edge)"
  assert judging.tuned_text(grid | {"chosen": 0.2}) == edge
  assert judging.tuned_text(grid | {"chosen": 0.1}) == "lr=0.1 (of 0.05, 0.1, 0.2)"
