"""Checkpoints: the format loopformer adds to Lightning's (``format``), writing files atomically (``atomic``),
importing other codebases' weights (``importer``; what their models are: ``upstream``) and starting a run from a checkpoint's weights (``warm_start``)."""
