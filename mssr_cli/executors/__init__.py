"""Where a run's process runs: here (``local``: one or several at once, each on its own GPUs) or as a job of the
cluster's scheduler (``slurm``, through submitit). The batch folder records every job (``jobs.json``), so
``mssr status``, a rerun of the same command and ``mssr cancel`` read disk and the scheduler, never a terminal.

Nothing here imports training: a run is always ``python -m mssr_cli train ...`` in its own process.
"""
