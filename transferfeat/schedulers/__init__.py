"""Schedulers: where and when nets train. Each plans with ``plan.schedule`` (the one planning
function) and trains through an engine (``engines``):

- ``local.Pool``: one net per device on this machine, each as soon as its own base net is done;
- ``slurm``: one sbatch job per net, a transfer net's job after its base net's (afterok).
"""
