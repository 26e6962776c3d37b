"""A single-node Slurm cluster on localhost for tests: munged, slurmctld and slurmd as root, in a folder
of their own, started and stopped by the test (no system service or file outside the folder is used).

`LocalSlurm(folder)` is a context manager; inside it, `env` holds `SLURM_CONF` for the clients (sbatch,
srun, scancel, squeue, `sacct -c`) and for submitit. `ensure_installed()` installs Debian's `slurm-wlm`
and `munge` with apt when they are missing and this process is root, and returns None, or the reason
why the cluster cannot run here (for a one-line skip). No cgroups: process tracking by /proc
(`proctrack/linuxproc`), no task plugin; job records go to a text file that `sacct -c` reads
(no slurmdbd).

By hand: `python tests/slurm_cluster.py start DIR` (prints the `export SLURM_CONF=...` line) and
`python tests/slurm_cluster.py stop DIR`.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = ("slurm-wlm", "munge")


def _which(name: str) -> str | None:
  return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if Path(p).exists()),
                                    None)


def ensure_installed() -> str | None:
  """None when munged, slurmctld, slurmd and the clients are here (installing them if we may), else why
  not."""
  missing = [d for d in (*DAEMONS, "srun", "sbatch") if _which(d) is None]
  if not missing:
    return None
  if os.geteuid() != 0 or shutil.which("apt-get") is None:
    return f"{', '.join(missing)} not installed (apt-get install {' '.join(PACKAGES)} as root)"
  env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
  subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
  done = subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, capture_output=True,
                        text=True, timeout=900)
  if done.returncode != 0:
    return f"apt-get install {' '.join(PACKAGES)} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
  missing = [d for d in (*DAEMONS, "srun", "sbatch") if _which(d) is None]
  return f"{', '.join(missing)} still missing after apt-get install" if missing else None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _config(folder: Path, cpus: int, memory_mb: int) -> str:
  f = folder
  return "\n".join([
      "ClusterName=research",
      "SlurmctldHost=localhost(127.0.0.1)",
      "SlurmUser=root", "SlurmdUser=root",
      "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={f}/munge/socket",
      f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
      f"StateSaveLocation={f}/state", f"SlurmdSpoolDir={f}/spool",
      f"SlurmctldPidFile={f}/slurmctld.pid", f"SlurmdPidFile={f}/slurmd.pid",
      f"SlurmctldLogFile={f}/log/slurmctld.log", f"SlurmdLogFile={f}/log/slurmd.log",
      "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
      "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
      "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
      "JobCompType=jobcomp/filetxt", f"JobCompLoc={f}/log/jobcomp.txt",
      "MpiDefault=none", "ReturnToService=2", "MinJobAge=3600", "KillWait=5",
      "SchedulerType=sched/backfill", "SchedulerParameters=sched_interval=1",
      f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
      "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
      ""])


class LocalSlurm:
  """Starts munged, slurmctld and slurmd for `folder`; `stop()` (or leaving the `with`) kills them."""

  def __init__(self, folder: str | Path, cpus: int | None = None, memory_mb: int = 8000):
    self.folder = Path(folder).resolve()
    self.cpus = cpus or os.cpu_count() or 1
    self.memory_mb = memory_mb
    self.conf = self.folder / "slurm.conf"
    self.env = os.environ | {"SLURM_CONF": str(self.conf)}

  def _pid(self, name: str) -> int | None:
    path = self.folder / ("munge" if name == "munged" else "") / f"{name}.pid"
    try:
      return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
      return None

  def start(self, timeout: float = 60.0) -> "LocalSlurm":
    for sub in ("munge", "state", "spool", "log"):
      (self.folder / sub).mkdir(parents=True, exist_ok=True)
    key = self.folder / "munge" / "munge.key"
    if not key.exists():
      key.write_bytes(os.urandom(128))
    os.chmod(self.folder / "munge", 0o700)
    os.chmod(key, 0o600)
    self.conf.write_text(_config(self.folder, self.cpus, self.memory_mb))
    m = self.folder / "munge"
    subprocess.run([_which("munged"), "--force", f"--socket={m}/socket", f"--key-file={key}",
                    f"--log-file={self.folder}/log/munged.log", f"--pid-file={m}/munged.pid",
                    f"--seed-file={m}/seed"], check=True, capture_output=True, timeout=30)
    subprocess.run([_which("slurmctld"), "-i"], env=self.env, check=True, capture_output=True, timeout=30)
    subprocess.run([_which("slurmd"), "-N", "localhost"], env=self.env, check=True, capture_output=True,
                   timeout=30)
    deadline = time.time() + timeout
    while time.time() < deadline:
      out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
      if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
        return self
      time.sleep(0.5)
    self.stop()
    raise RuntimeError(f"the local Slurm did not come up in {timeout:.0f} s: see {self.folder}/log")

  def stop(self) -> None:
    """Kills the daemons (slurmd first) and any job step they left."""
    for name in ("slurmd", "slurmctld", "munged"):
      pid = self._pid(name)
      if pid is None:
        continue
      try:
        os.kill(pid, signal.SIGTERM)
      except ProcessLookupError:
        continue
      for _ in range(100):
        try:
          os.kill(pid, 0)
        except ProcessLookupError:
          break
        time.sleep(0.1)
      else:
        os.kill(pid, signal.SIGKILL)

  def sacct(self) -> list[dict]:
    """The finished jobs' records (`sacct -c`: job id, name, state, exit code, ...), one dict each."""
    fields = "jobid,jobname,state,exitcode,start,end"
    out = subprocess.run(["sacct", "-c", "-n", "-P", "-o", fields], env=self.env, capture_output=True,
                         text=True, check=True)
    names = fields.split(",")
    return [dict(zip(names, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()


if __name__ == "__main__":
  if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
    sys.exit("usage: python tests/slurm_cluster.py start|stop DIR")
  cluster = LocalSlurm(sys.argv[2])
  if sys.argv[1] == "start":
    reason = ensure_installed()
    if reason:
      sys.exit(f"error: {reason}")
    cluster.start()
    print(f"export SLURM_CONF={cluster.conf}")
  else:
    cluster.stop()
