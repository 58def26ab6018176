"""One run's lifetime: its directory (``directory``), the claim that keeps a second run out of it (``claim``), and
stopping on a signal with a checkpoint (``stopping``)."""
