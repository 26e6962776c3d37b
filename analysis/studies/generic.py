"""The generic report template: any run or sweep (and the fallback when a study's template does not apply
or the study is unknown): the standard results and findings over the conditions, no published result."""

from analysis.document import Section
from analysis.results import Template, generic_findings, standard_results

TITLE = "Report"


def _generic_results(ctx):
  return [Section("Results", standard_results(ctx))], generic_findings(ctx)


def _generic_comparison(ctx, findings):
  return ["This is a generic report: the runs do not name a study with a published result to compare "
          "against (`config.study` is empty, unknown or mixed), so no comparison is made."]


def _always(ctx):
  return None


TEMPLATE = Template("generic", TITLE, "What did these runs reach (accuracy, generalization gap, curvature), "
                    "and how do the conditions compare over seeds?", _always, _generic_results,
                    _generic_comparison)
