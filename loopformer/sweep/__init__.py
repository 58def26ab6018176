"""Sweeps: sweep files and the W&B agent's command line (``spec``), the offline runner (``runner``) and the report
that turns a finished sweep into an answer (``report``)."""
