"""A dry run of a study's sweep: every trial built and traced on abstract shapes, its cost estimated from
XLA's FLOP counts, nothing trained, compiled or downloaded. Entry: `python -m experiments.dry_run`.

For each trial (`trial.Planner.trial`): the dataset's shapes and split sizes from its dataset card
(`research.data.describe`), the model and optimizer state under `jax.eval_shape` of the loop's
`build_state` (parameter count), the loop's train and eval steps traced on batches of the loop's shapes,
and every evaluator the config switches on, traced on one chunk of its configured size
(`evaluators`). Anything that would fail (an unknown model, a knob or key, a shape, a probe set that is
not whole ghost batches) fails the trial with one line naming the study, variant and trial
(`study.plan_study`).

The cost of a trial is the sum over its programs of XLA's FLOP count of the lowered program (`costs`)
times the number of calls training makes of it: train steps, evaluations, and each evaluator's calls on
its schedule, counted by the rules in `evaluators` (eigen-solves as one Krylov basis, ascents at their
full step budget). GPU-hours divide FLOPs by an assumed sustained throughput (`costs.Throughput`,
default 40% of an A100's 19.5 TFLOP/s in float32). It is an estimate from FLOP counts: it ignores memory
traffic, host work (data loading, Lanczos' small dense algebra, norms, checkpoints), compilation, and how
far the solvers' own stopping rules cut their work.
"""

from research.dry_run.costs import Cost, Program, Throughput, lower
from research.dry_run.study import StudyPlan, apply_overrides, plan_study, rows, table
from research.dry_run.trial import Planner, TrialPlan

__all__ = ["Cost", "Planner", "Program", "StudyPlan", "Throughput", "TrialPlan", "apply_overrides", "lower",
           "plan_study", "rows", "table"]
