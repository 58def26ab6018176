"""`loopformer sweep report`: a sweep's runs ranked, compared at equal compute, and explained by parameter."""

from loopformer.sweep.report.records import ReportError
from loopformer.sweep.report.report import main, make_report

__all__ = ["ReportError", "main", "make_report"]
