"""Several runs at once: ablations and local sweeps, each run an ordinary ``mssr train`` run folder."""
