"""`tf doctor`: what tf will use (engine tools, GPUs, SLURM) and how to fix what is missing."""
from __future__ import annotations

import shutil

from . import engines
from .engines import Engine
from .engines.caffe import gpus
from .logcache import cache_dir


def diagnose(engine: Engine) -> dict:
    """What ``engine`` (and every other engine, for when it is asked for) will use and lacks."""
    info, missing = engine.doctor()
    for name in engines.names():
        if name != engine.name:
            other, lacking = engines.get(name).doctor()
            info.update(other)
            missing += [dict(m, why=m["why"] + f" (only --engine {name} needs it)") for m in lacking]
    sbatch = shutil.which("sbatch")
    if not sbatch:
        missing.append({"what": "slurm", "why": "sbatch not found (only `tf submit` needs it)",
                        "fix": "apt-get install slurm-client, or run on your cluster's login node"})
    cache = cache_dir()
    size = sum(p.stat().st_size for p in cache.glob("*") if p.is_file()) if cache.is_dir() else 0
    return {"engine": engine.name, **info, "gpus": gpus(),
            "slurm": {t: shutil.which(t) for t in ("sbatch", "squeue", "scancel")},
            "log_cache": {"path": str(cache), "bytes": size}, "missing": missing}


def lines(info: dict) -> list[str]:
    """The text form of ``diagnose``'s answer."""
    out = [f"{'engine':<20} {info['engine']}"]
    out += [f"{t:<20} {p or 'MISSING'}" for t, p in info.get("tools", {}).items()]
    out.append(f"{'caffe version':<20} {info.get('caffe_version') or '-'}")
    out.append(f"{'torch':<20} {info.get('torch') or 'not installed'}"
               + (f" (CUDA {info['cuda']}: {', '.join(info['torch_gpus'])})" if info.get("cuda") else ""))
    out.append(f"{'gpus':<20} {', '.join(g['name'] for g in info['gpus']) or 'none (CPU training)'}")
    out.append(f"{'slurm':<20} {info['slurm']['sbatch'] or 'not found'}")
    out.append(f"{'log cache':<20} {info['log_cache']['path']} ({info['log_cache']['bytes'] / 2**20:.1f} MiB)")
    for m in info["missing"]:
        out.append(f"\nmissing {m['what']}: {m['why']}\n  fix: {m['fix']}")
    return out
