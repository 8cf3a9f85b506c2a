"""Boundary controls: what a job can reach of the GPUs it was not given.

A job submitted with `probe: true` runs `PROBE` as it starts: it tries to
open every GPU device file of its node, notes its own cgroups and whether a
GPU driver is present, and writes what it saw as JSON. `interpret` turns
that into findings that say what was observed, whatever it is: if a
configuration ever makes enforcement observable, the findings say so.
"""

from __future__ import annotations

from typing import Any

# Runs inside the job, as the job's user; the kit's fake devices live under
# /dev/fakegpu/NODE/, a real node's under /dev/nvidiaN.
PROBE = r'''
import errno, glob, json, os, re, shutil, sys
node = os.environ.get("SLURMD_NODENAME", "")
paths = sorted(glob.glob(f"/dev/fakegpu/{node}/nvidia[0-9]*")
               or glob.glob("/dev/nvidia[0-9]*"))
given = [i for i in os.environ.get("SLURM_JOB_GPUS", "").split(",") if i]
opened = {}
for path in paths:
    index = re.search(r"(\d+)$", path).group(1)
    try:
        os.close(os.open(path, os.O_RDWR))
        opened[index] = "opened"
    except OSError as exc:
        opened[index] = errno.errorcode.get(exc.errno, str(exc.errno))
cgroups = open("/proc/self/cgroup").read().split()
devices_list = None
for line in cgroups:
    parts = line.split(":", 2)
    if len(parts) == 3 and parts[1] == "devices":
        try:
            devices_list = open(f"/sys/fs/cgroup/devices{parts[2]}/devices.list").read()
        except OSError as exc:
            devices_list = f"unreadable: {exc.strerror}"
smi = shutil.which("nvidia-smi")
listed = None
if smi:
    import subprocess
    done = subprocess.run([smi, "-L"], capture_output=True, text=True)
    listed = [ln for ln in done.stdout.splitlines() if ln.startswith("GPU ")]
json.dump({"node": node, "given": given, "devices": opened, "cgroups": cgroups,
           "devices_list": devices_list,
           "driver": os.path.exists("/proc/driver/nvidia"),
           "nvidia_smi": smi, "nvidia_smi_gpus": listed,
           "shards": os.environ.get("SLURM_SHARDS_ON_NODE"),
           "mps_percentage": os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"),
           "mps_control": shutil.which("nvidia-cuda-mps-control"),
           "mps_pipe": os.path.exists(os.environ.get("CUDA_MPS_PIPE_DIRECTORY",
                                                     "/tmp/nvidia-mps"))},
          sys.stdout)
'''


def interpret(probe: dict[str, Any]) -> list[dict[str, Any]]:
    """Findings of one probe: device access, the job's cgroup, the GPU driver,
    and for a job given shards, what limits its share of the GPU."""
    findings = [_device_access(probe), _device_cgroup(probe), _driver(probe)]
    if probe.get("shards"):
        findings.append(_share_limit(probe))
    return findings


def _share_limit(probe: dict[str, Any]) -> dict[str, Any]:
    shards, given = probe.get("shards"), probe.get("given", [])
    percentage, control = probe.get("mps_percentage"), probe.get("mps_control")
    observed = {"shards": shards, "given": given, "mps_percentage": percentage,
                "mps_control": control, "mps_pipe": probe.get("mps_pipe")}
    if percentage and control and probe.get("mps_pipe") and probe.get("driver"):
        finding = (f"the job given {shards} shard(s) of GPU {given} runs under an MPS "
                   f"limit of {percentage}% with an MPS control daemon present")
        enforced = True
    else:
        missing = [what for what, there in (
            ("a GPU driver", probe.get("driver")),
            ("an MPS control daemon", control and probe.get("mps_pipe")),
            ("an MPS thread limit", percentage)) if not there]
        finding = (f"the job given {shards} shard(s) was handed GPU {given} whole: "
                   f"nothing limits its share ({', '.join(missing)} absent); shards "
                   "are counted by slurmctld, not enforced on the device")
        enforced = False
    return {"control": "share-limit", "finding": finding, "observed": observed,
            "enforcement_observed": enforced}


def _device_access(probe: dict[str, Any]) -> dict[str, Any]:
    given = set(probe.get("given", []))
    outcomes: dict[str, str] = probe.get("devices", {})
    mine = {i: o for i, o in outcomes.items() if i in given}
    others = {i: o for i, o in outcomes.items() if i not in given}
    observed = {"given": sorted(given), "own": mine, "not_given": others}
    if not outcomes:
        finding = "the job found no GPU device files on its node"
        enforced = None
    elif any(o == "opened" for o in others.values()):
        opened = sorted(i for i, o in others.items() if o == "opened")
        finding = (f"the job opened device files of GPUs it was not given ({opened}): "
                   "nothing constrains device access")
        enforced = False
    elif others and all(o == "EPERM" for o in others.values()) and not all(
            o == "EPERM" for o in mine.values()):
        finding = ("device files of GPUs the job was not given were refused (EPERM) "
                   "while its own were not: a device cgroup constrains the job")
        enforced = True
    elif set(outcomes.values()) == {"ENXIO"}:
        finding = ("every GPU device file, given or not, reached the kernel and found "
                   "no driver (ENXIO): device access is not constrained, and no GPU "
                   "answers")
        enforced = False
    elif set(outcomes.values()) == {"EPERM"}:
        finding = ("every GPU device file, given or not, was refused (EPERM): the "
                   "container's own device rules deny them all, which is not Slurm's "
                   "enforcement")
        enforced = None
    else:
        finding = f"device files answered {outcomes} for a job given {sorted(given)}"
        enforced = None
    return {"control": "device-access", "finding": finding, "observed": observed,
            "enforcement_observed": enforced}


def _device_cgroup(probe: dict[str, Any]) -> dict[str, Any]:
    cgroups = probe.get("cgroups", [])
    slurm = [c for c in cgroups if "slurm" in c or "/job_" in c]
    if slurm:
        finding = f"the job runs in a Slurm job cgroup ({slurm[0]})"
    else:
        finding = ("the job runs in no Slurm cgroup: Slurm constrains no device of it "
                   "(its cgroups are the container's)")
    return {"control": "device-cgroup", "finding": finding,
            "observed": {"cgroups": cgroups, "devices_list": probe.get("devices_list")},
            "enforcement_observed": bool(slurm) or None}


def _driver(probe: dict[str, Any]) -> dict[str, Any]:
    driver, smi = probe.get("driver"), probe.get("nvidia_smi")
    listed = probe.get("nvidia_smi_gpus")
    given = probe.get("given", [])
    if not driver and not smi:
        finding = "no GPU driver is loaded (/proc/driver/nvidia is absent) and " \
                  "nvidia-smi is not installed"
    elif listed is not None:
        finding = (f"nvidia-smi lists {len(listed)} GPU(s) to the job, which was "
                   f"given {len(given)}; the driver is "
                   f"{'loaded' if driver else 'not loaded'}")
        driver = driver and len(listed) == len(given)
    else:
        finding = (f"a GPU driver is {'present' if driver else 'absent'} and "
                   f"nvidia-smi is {smi or 'not installed'}")
    return {"control": "gpu-driver", "finding": finding,
            "observed": {"driver": driver, "nvidia_smi": smi, "listed": listed},
            "enforcement_observed": None}
