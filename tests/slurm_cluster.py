"""A one-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd, configured in a
temporary folder (Debian's slurm-wlm and munge; run as root). Used through the `slurm` fixture."""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = """ClusterName=tftest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={dir}/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobRequeue=1
KillWait=10
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, folder: Path):
        self.dir = folder
        self.procs = []
        self.conf = folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self, cpus: int = 4):
        """Start munged, slurmctld and slurmd; on any failure stop what was started, then raise."""
        try:
            return self._start(cpus)
        except BaseException:
            self.stop()
            raise

    def _start(self, cpus: int):
        d = self.dir
        (d / "state").mkdir(parents=True)
        (d / "spool").mkdir()
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={d}/munge.sock",
                        f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log", f"--seed-file={d}/munged.seed"],
                       check=True, capture_output=True)
        self.conf.write_text(CONF.format(host=socket.gethostname(), dir=d, cpus=cpus,
                                         ctld_port=_free_port(), d_port=_free_port()))
        for daemon in ("slurmctld", "slurmd"):
            log = open(d / f"{daemon}.out", "wb")
            self.procs.append(subprocess.Popen([daemon, "-D", "-f", str(self.conf)], env=self.env, stdout=log,
                                               stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if out.stdout.strip() == "idle":
                return self
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        raise RuntimeError("SLURM did not come up:\n" + "".join(
            (d / f).read_text(errors="replace")[-2000:] for f in ("slurmctld.out", "slurmd.out") if (d / f).exists()))

    def run(self, *args) -> str:
        out = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {out.stderr}")
        return out.stdout

    def wait_idle(self, timeout: float = 120):
        """Until no job is queued or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.run("squeue", "-h").strip():
                return
            time.sleep(0.3)
        raise TimeoutError("jobs still queued:\n" + self.run("squeue"))

    def stop(self):
        subprocess.run(["scancel", "-u", "root"], env=self.env, capture_output=True)
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        pid = self.dir / "munged.pid"
        if pid.exists():
            try:
                munged = int(pid.read_text())
                os.kill(munged, 15)
                deadline = time.time() + 10
                while time.time() < deadline and _alive(munged):   # it writes its seed file as it exits
                    time.sleep(0.1)
            except (ValueError, ProcessLookupError):
                pass


def _alive(pid: int) -> bool:
    """Running, and not a zombie (a container's PID 1 may never reap the daemon)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def available() -> str:
    """Why a cluster cannot be started here, or '' when it can."""
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(t)]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the one-node cluster runs as root"
    cgroup = Path("/sys/fs/cgroup")
    if not (cgroup.is_dir() and any(cgroup.iterdir())):
        return "this machine cannot run slurmd: no cgroup filesystem at /sys/fs/cgroup"
    return ""
