"""SLURM: one sbatch job per net running `tf train`, transfer nets after their base net's job (afterok).

The job script is built by one pure function (``job_script``) and written into the net's folder,
where it can be reviewed and resubmitted by hand; the dependency is given on sbatch's command line,
so the script never names a job id. Jobs are requeueable: on preemption or near the time limit the
script asks tf train (and so Caffe) to snapshot, and the requeued job resumes from that snapshot.
Each job records its state in ``<net>/tf-slurm.json`` (useful where accounting is off).
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import atomic
from .errors import Error
from .netdir import NetDir
from .study import Net, Study

SCRIPT = "tf-job.sbatch"
STATE = "tf-slurm.json"
QUEUED = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}


@dataclass(frozen=True)
class Resources:
    partition: Optional[str] = None
    gres: Optional[str] = None
    time: Optional[str] = None
    account: Optional[str] = None
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    extra: tuple = ()                 # further sbatch options, one each, e.g. ("--qos=long",)
    signal_seconds: int = 300         # warning before the time limit: snapshot and requeue

    @property
    def gpu(self) -> bool:
        return bool(self.gres and "gpu" in self.gres)


def job_script(net: Net, root: Path, res: Resources, tf_command: list, study_file: Path, caffe=None) -> str:
    """The sbatch script that trains ``net``: every value shell-quoted, no job ids inside."""
    q = shlex.quote
    d = NetDir(root, net.name).path
    lines = ["#!/bin/bash", _directive("--job-name", "tf-" + net.name),
             _directive("--output", str(d / "tf-slurm-%j.txt")), "#SBATCH --open-mode=append", "#SBATCH --requeue",
             f"#SBATCH --signal=B:USR1@{int(res.signal_seconds)}"]
    for opt, value in (("partition", res.partition), ("gres", res.gres), ("time", res.time),
                       ("account", res.account), ("cpus-per-task", res.cpus_per_task), ("mem", res.mem)):
        if value is not None:
            lines.append(_directive(f"--{opt}", str(value)))
    for e in res.extra:
        if not e.startswith("-"):
            raise Error(f"extra sbatch option {e!r}: give one option per --extra, as --name=value")
        opt, eq, value = e.partition("=")
        lines.append(_directive(opt, value) if eq else _directive(opt))
    train = [*tf_command, "--study", str(study_file), "train", net.name, "--root", str(root)]
    train += ["--gpu", "0"] if res.gpu else ["--cpu"]
    if caffe:
        train += ["--caffe", str(caffe)]
    state = q(str(d / STATE))
    lines += [
        "",
        f"# {net.name}: {net.family}" + (f", layers 1..{net.n} from {net.base}" if net.base else ""),
        "set -u",
        "note() {  # record this job's state beside the net (where sacct is not available)",
        f'  printf \'{{"job_id": "%s", "state": "%s", "restarts": %s, "updated": "%s"}}\\n\' '
        f'"$SLURM_JOB_ID" "$1" "${{SLURM_RESTART_COUNT:-0}}" "$(date +%Y-%m-%dT%H:%M:%S)" > {state}.tmp',
        f"  mv {state}.tmp {state}",
        "}",
        "stop() {  # ask tf train to make Caffe snapshot and stop, and wait for it",
        '  kill -INT "$child" 2>/dev/null; wait "$child"',
        "}",
        "note RUNNING",
        " ".join(q(str(a)) for a in train) + " &",
        "child=$!",
        "trap 'stop; note REQUEUED; scontrol requeue \"$SLURM_JOB_ID\"; exit 0' USR1   # near the time limit",
        "trap 'stop; note PREEMPTED; exit 143' TERM                                   # preemption, requeue, scancel",
        'wait "$child"',
        "rc=$?",
        'if [ "$rc" -eq 0 ]; then note COMPLETED; else note FAILED; fi',
        'exit "$rc"',
        "",
    ]
    return "\n".join(lines)


def _directive(opt: str, value: str = None) -> str:
    """One ``#SBATCH`` line. sbatch reads these itself (no shell): a value with spaces or shell
    characters goes in double quotes, which it strips; a double quote or newline cannot be said."""
    for part in (opt, value or ""):
        if '"' in part or "\n" in part:
            raise Error(f"sbatch option {opt} {value!r}: double quotes and newlines are not allowed")
    if " " in opt or not opt.startswith("-"):
        raise Error(f"sbatch option {opt!r}: expected --name or --name=value")
    if value is None:
        return f"#SBATCH {opt}"
    return f'#SBATCH {opt}="{value}"' if shlex.quote(value) != value else f"#SBATCH {opt}={value}"


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    except FileNotFoundError:
        raise Error(f"{cmd[0]} not found: SLURM's client commands must be on PATH (tf doctor)") from None


def queue_states(job_ids) -> dict[str, str]:
    """Job id -> state, for the given jobs that squeue still knows."""
    ids = [str(j) for j in job_ids if j]
    if not ids:
        return {}
    out = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T"])
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise Error(f"squeue failed: {out.stderr.strip()}")
    return dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())


def accounting_states(job_ids) -> dict[str, str]:
    """Job id -> final state from sacct, where accounting is on; {} otherwise."""
    ids = [str(j) for j in job_ids if j]
    if not ids or not shutil.which("sacct"):
        return {}
    out = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", "JobID,State"])
    if out.returncode != 0:
        return {}
    return {j: s.split()[0] for j, s in (l.split("|", 1) for l in out.stdout.splitlines() if "|" in l)}


def read_job(d: NetDir) -> dict:
    try:
        return json.loads((d.path / STATE).read_text())
    except (OSError, ValueError):
        return {}


@dataclass
class Submission:
    submitted: dict = field(default_factory=dict)     # net -> (job id, dependency job id or None)
    skipped: dict = field(default_factory=dict)       # net -> why
    scripts: dict = field(default_factory=dict)       # net -> script path


def submit(study: Study, root, nets: list[Net], res: Resources, dry_run: bool = False, caffe=None,
           tf_command: list = None, echo=print) -> Submission:
    """One job per net, in dependency order; done and already-queued nets are skipped."""
    root = Path(root).resolve()
    tf_command = tf_command or [sys.executable, "-m", "transferfeat.cli"]
    study_file = root / "tf-study.yaml"
    if not study_file.is_file():
        raise Error(f"{study_file} not found: render the nets first (tf render … --out {root})")
    result = Submission()
    recorded = {n.name: read_job(NetDir(root, n.name)).get("job_id") for n in study.nets.values()}
    live = {} if dry_run else queue_states(recorded.values())
    queued = {name: job for name, job in recorded.items() if job and live.get(str(job)) in QUEUED}
    selected = {n.name for n in nets}
    for net in nets:
        d = NetDir(root, net.name)
        if not d.solver.is_file():
            result.skipped[net.name] = f"not rendered under {root}"
            continue
        if d.final_snapshot(study.max_iter(net)):
            result.skipped[net.name] = "done"
            continue
        if net.name in queued:
            result.skipped[net.name] = f"already queued as job {queued[net.name]}"
            continue
        dep = None
        if net.base and not NetDir(root, net.base).final_snapshot(study.max_iter(study.net(net.base))):
            dep = result.submitted.get(net.base, (None,))[0] or queued.get(net.base)
            if dep is None:
                why = "was not submitted" if net.base in selected else "is neither done, queued nor selected"
                result.skipped[net.name] = f"its base net {net.base} {why}"
                continue
        script = job_script(net, root, res, tf_command, study_file, caffe)
        path = d.path / SCRIPT
        result.scripts[net.name] = path
        if dry_run:
            result.submitted[net.name] = (f"<{net.name}>", dep)
            echo(f"# ---- {path}" + (f"  (sbatch --dependency=afterok:{dep})" if dep else ""))
            echo(script)
            continue
        atomic.write_text(path, script)
        cmd = ["sbatch", "--parsable"] + ([f"--dependency=afterok:{dep}"] if dep else []) + [str(path)]
        out = _run(cmd, cwd=root)
        if out.returncode != 0:
            result.skipped[net.name] = f"sbatch failed: {out.stderr.strip()}"
            continue
        job = out.stdout.strip().split(";")[0]
        atomic.write_text(d.path / STATE, json.dumps({"job_id": job, "state": "SUBMITTED", "dependency": dep,
                                                      "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        result.submitted[net.name] = (job, dep)
        echo(f"submitted {net.name} as job {job}" + (f" after job {dep} ({net.base})" if dep else ""))
    return result


def cancel(study: Study, root, nets: list[Net], echo=print) -> list[tuple[str, str]]:
    """Cancel the selected nets' queued jobs and those of every net depending on them."""
    root = Path(root)
    names = {n.name for n in nets}
    grow = list(names)
    while grow:
        for dep in study.dependants(grow.pop()):
            if dep.name not in names:
                names.add(dep.name)
                grow.append(dep.name)
    jobs = {n: read_job(NetDir(root, n)).get("job_id") for n in names}
    live = queue_states(jobs.values())
    cancelled = [(n, j) for n, j in sorted(jobs.items()) if j and live.get(str(j)) in QUEUED]
    if cancelled:
        out = _run(["scancel"] + [str(j) for _, j in cancelled])
        if out.returncode != 0:
            raise Error(f"scancel failed: {out.stderr.strip()}")
    for n, j in cancelled:
        atomic.write_text(NetDir(root, n).path / STATE, json.dumps(
            {**read_job(NetDir(root, n)), "state": "CANCELLED", "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        echo(f"cancelled {n} (job {j})" + ("" if n in {x.name for x in nets} else ", a dependant"))
    return cancelled


def job_states(study: Study, root, nets: list[Net]) -> dict[str, str]:
    """SLURM state per net that has a job: squeue, else sacct, else the state the job script wrote."""
    jobs = {n.name: read_job(NetDir(root, n.name)) for n in nets}
    jobs = {n: j for n, j in jobs.items() if j.get("job_id")}
    if not jobs or not shutil.which("squeue"):
        return {n: f"{j['state'].lower()} (job {j['job_id']})" for n, j in jobs.items()}
    live = queue_states(j["job_id"] for j in jobs.values())
    acct = accounting_states(j["job_id"] for n, j in jobs.items() if str(j["job_id"]) not in live)
    out = {}
    for n, j in jobs.items():
        jid = str(j["job_id"])
        state = live.get(jid) or acct.get(jid) or j["state"]
        out[n] = f"{state.lower()} (job {jid})"
    return out
