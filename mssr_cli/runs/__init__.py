"""The run folder on disk, for every command that reads or writes one: its layout and files
(``folder``), its one-writer lock (``lock``) and its checkpoints' manifests (``checkpoints``).

Nothing here imports TRL or torch: training writes run folders, while experiments, evaluation,
reporting and export read them, and none of those may import training (DESIGN.md).
"""
