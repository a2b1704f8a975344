"""SLURM: one sbatch job per net running `tf train`, transfer nets after their base net's job (afterok).

The job script is built by one pure function (``job_script``) and written into the net's folder,
where it can be reviewed and resubmitted by hand; the dependency is given on sbatch's command line,
so the script never names a job id. Jobs are requeueable: on preemption or near the time limit the
script asks tf train (and so Caffe) to snapshot, and the requeued job resumes from that snapshot.
Each job records its state beside the net (useful where accounting is off). Which nets are
submitted, in which order and after which job comes from ``plan.schedule``; what runs in the job
is ``tf train`` with the engine's own options.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import atomic
from ..engines import Engine
from ..errors import Error
from ..folder import StudyFolder
from ..plan import schedule
from ..state import adopt_all, states
from ..study import Net

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


def job_script(net: Net, folder: StudyFolder, res: Resources, tf_command: list, engine_args: list = ()) -> str:
    """The sbatch script that trains ``net``: every value shell-quoted, no job ids inside."""
    q = shlex.quote
    d = folder.net(net.name)
    lines = ["#!/bin/bash", _directive("--job-name", "tf-" + net.name),
             _directive("--output", str(d.job_output)), "#SBATCH --open-mode=append", "#SBATCH --requeue",
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
    train = [*tf_command, "--study", str(folder.study_copy), "train", net.name, "--root", str(folder.root)]
    train += [*(["--gpu", "0"] if res.gpu else []), *engine_args]
    state = q(str(d.job_record))
    lines += [
        "",
        f"# {net.name}: {net.family}" + (f", layers 1..{net.n} from {net.base}" if net.base else ""),
        "set -u",
        "note() {  # record this job's state beside the net (where sacct is not available)",
        f'  printf \'{{"job_id": "%s", "state": "%s", "restarts": %s, "updated": "%s"}}\\n\' '
        f'"$SLURM_JOB_ID" "$1" "${{SLURM_RESTART_COUNT:-0}}" "$(date +%Y-%m-%dT%H:%M:%S)" > {state}.tmp',
        f"  mv {state}.tmp {state}",
        "}",
        "stop() {  # ask tf train to make the trainer snapshot and stop, and wait for it",
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


# --------------------------------------------------------------------------- SLURM's outputs, parsed

def parse_squeue(text: str) -> dict[str, str]:
    """``squeue -h -o "%i %T"``: job id -> state (RUNNING, PENDING, …); blank lines skipped."""
    return dict(line.split()[:2] for line in text.splitlines() if len(line.split()) >= 2)


def parse_sacct(text: str) -> dict[str, str]:
    """``sacct -n -X -P -o JobID,State``: job id -> state, without what follows it ("CANCELLED by 0"
    -> CANCELLED); a job id seen twice (requeued) keeps its last line."""
    return {j.strip(): s.split()[0] for j, s in (l.split("|", 1) for l in text.splitlines() if "|" in l) if s.split()}


def parse_sbatch(text: str) -> str:
    """``sbatch --parsable``: the job id ("123", or "123;cluster" on a federation); an error when it
    printed none."""
    job = text.strip().split(";")[0].strip()
    if not job.split("_")[0].isdigit():
        raise Error(f"sbatch printed no job id: {text.strip()[:200]!r}")
    return job


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
    return parse_squeue(out.stdout)


def accounting_states(job_ids) -> dict[str, str]:
    """Job id -> final state from sacct, where accounting is on; {} otherwise."""
    ids = [str(j) for j in job_ids if j]
    if not ids or not shutil.which("sacct"):
        return {}
    out = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", "JobID,State"])
    if out.returncode != 0:
        return {}
    return parse_sacct(out.stdout)


def read_job(netdir) -> dict:
    """The record of the net's SLURM job ({} when it has none)."""
    return atomic.read_json(netdir.job_record)


def write_job(netdir, **fields) -> None:
    atomic.write_json(netdir.job_record, {**fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})


@dataclass
class Submission:
    submitted: dict = field(default_factory=dict)     # net -> (job id, dependency job id or None)
    skipped: dict = field(default_factory=dict)       # net -> why (done, queued, blocked)
    failed: dict = field(default_factory=dict)        # net -> why sbatch refused it
    scripts: dict = field(default_factory=dict)       # net -> script path

    def lines(self, study, dry_run: bool) -> list[str]:
        out = ["\n# dependency graph" if dry_run else ""]
        for name, (job, dep) in self.submitted.items():
            out.append(f"{name:<26} {job:<12}" + (f" afterok {dep} ({study.net(name).base})" if dep else ""))
        out += [f"{name:<26} skipped: {why}" for name, why in self.skipped.items()]
        return out + [f"{len(self.submitted)} {'would be submitted' if dry_run else 'submitted'}, "
                      f"{len(self.skipped)} skipped" + (f", {len(self.failed)} failed" if self.failed else "")]


def submit(folder: StudyFolder, nets: list[Net], res: Resources, engine: Engine, dry_run: bool = False,
           tf_command: list = None, echo=print) -> Submission:
    """One job per net, in dependency order; done and already-queued nets are skipped."""
    folder = StudyFolder(Path(folder.root).resolve(), folder.study)
    tf_command = tf_command or [sys.executable, "-m", "transferfeat.cli"]
    if not folder.study_copy.is_file():
        raise Error(f"{folder.study_copy} not found: render the nets first (tf render … --root {folder.root})")
    result = Submission()
    recorded = {n.name: read_job(folder.net(n.name)).get("job_id") for n in folder.study.nets.values()}
    live = {} if dry_run else queue_states(recorded.values())
    queued = {name: job for name, job in recorded.items() if job and live.get(str(job)) in QUEUED}
    selected = [n for n in nets if folder.is_rendered(n.name) and n.name not in queued]
    for net in nets:
        if not folder.is_rendered(net.name):
            result.skipped[net.name] = f"not rendered under {folder.root}"
        elif net.name in queued:
            result.skipped[net.name] = f"already queued as job {queued[net.name]}"
    plan = schedule(folder.study, selected, adopt_all(folder, states(folder, selected), echo), queued=set(queued))
    for name in plan.done:
        result.skipped[name] = "done"
    for name, (base, why) in plan.blocked.items():
        result.skipped[name] = f"its base net {base} is {why}"
    for net in plan.order:
        base = plan.after[net.name]
        dep = None
        if base is not None:
            dep = result.submitted.get(base, (None,))[0] or queued.get(base)
            if dep is None:
                result.skipped[net.name] = f"its base net {base} was not submitted"
                continue
        d = folder.net(net.name)
        script = job_script(net, folder, res, tf_command, engine.job_args())
        result.scripts[net.name] = d.job_script
        if dry_run:
            result.submitted[net.name] = (f"<{net.name}>", dep)
            echo(f"# ---- {d.job_script}" + (f"  (sbatch --dependency=afterok:{dep})" if dep else ""))
            echo(script)
            continue
        atomic.write_text(d.job_script, script)
        cmd = ["sbatch", "--parsable"] + ([f"--dependency=afterok:{dep}"] if dep else []) + [str(d.job_script)]
        out = _run(cmd, cwd=folder.root)
        if out.returncode != 0:
            result.failed[net.name] = f"sbatch failed: {out.stderr.strip() or f'exit code {out.returncode}'}"
            continue
        try:
            job = parse_sbatch(out.stdout)
        except Error as e:
            result.failed[net.name] = str(e)
            continue
        write_job(d, job_id=job, state="SUBMITTED", dependency=dep)
        result.submitted[net.name] = (job, dep)
        echo(f"submitted {net.name} as job {job}" + (f" after job {dep} ({base})" if dep else ""))
    return result


def cancel(folder: StudyFolder, nets: list[Net], echo=print) -> list[tuple[str, str]]:
    """Cancel the selected nets' queued jobs and those of every net depending on them."""
    names = {n.name for n in nets}
    grow = list(names)
    while grow:
        for dep in folder.study.dependants(grow.pop()):
            if dep.name not in names:
                names.add(dep.name)
                grow.append(dep.name)
    jobs = {n: read_job(folder.net(n)).get("job_id") for n in names}
    live = queue_states(jobs.values())
    cancelled = [(n, j) for n, j in sorted(jobs.items()) if j and live.get(str(j)) in QUEUED]
    if cancelled:
        out = _run(["scancel"] + [str(j) for _, j in cancelled])
        if out.returncode != 0:
            raise Error(f"scancel failed: {out.stderr.strip()}")
    for n, j in cancelled:
        write_job(folder.net(n), **{**read_job(folder.net(n)), "state": "CANCELLED"})
        echo(f"cancelled {n} (job {j})" + ("" if n in {x.name for x in nets} else ", a dependant"))
    return cancelled


def job_states(folder: StudyFolder, nets: list[Net]) -> dict[str, str]:
    """SLURM state per net that has a job: squeue, else sacct, else the state the job script wrote."""
    jobs = {n.name: read_job(folder.net(n.name)) for n in nets}
    jobs = {n: j for n, j in jobs.items() if j.get("job_id")}
    if not jobs or not shutil.which("squeue"):
        return {n: f"{str(j.get('state', '?')).lower()} (job {j['job_id']})" for n, j in jobs.items()}
    live = queue_states(j["job_id"] for j in jobs.values())
    acct = accounting_states(j["job_id"] for n, j in jobs.items() if str(j["job_id"]) not in live)
    out = {}
    for n, j in jobs.items():
        jid = str(j["job_id"])
        state = live.get(jid) or acct.get(jid) or str(j.get("state", "?"))
        out[n] = f"{state.lower()} (job {jid})"
    return out
