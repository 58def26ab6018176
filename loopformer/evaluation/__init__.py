"""Evaluation: running a batch to halting and the evaluators that score it (``evaluators``), ARC voting and pass@k
(``arc``), test-time depth curves (``depth_curve``), ``predictions.npz`` (``predictions``) and the compute per
evaluated puzzle (``compute_report``)."""

# The metric a run is judged by: early stopping's default, a sweep's default goal (kept here, in a module that
# imports nothing, so that the sweep tools read it without loading torch).
HEADLINE_METRIC = "val/exact_accuracy"
