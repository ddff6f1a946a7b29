"""The CDK app's cloud assembly for the twin: synthesized with the project's CDK CLI once per
fingerprint of the sources (and of the clone's location), and cached under the user's cache
directory, so a second `churnops local up` with unchanged sources starts without a synth.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from churnops.errors import ChurnOpsError

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_NAME = "ChurnOps"
# What the synthesized template depends on: a change to any of these means synthesize again.
_SYNTH_INPUTS = ("app.py", "cdk.json", "stacks", "glue_jobs", "containers", "churnops")

Progress = Callable[[str], None]

# The twin's own settings over cdk.json, as `cdk synth -c` overrides (the way a user overrides one
# key): rollout bakes of seconds rather than hours, checked every two seconds, and a comparison
# window a test's few hundred customers complete (the daemon shortens serving's champion check,
# TWIN_CHAMPION_REFRESH_SECONDS, so serving follows a stage at once). Everything else deploys as
# configured.
TWIN_CONTEXT = {
    "churnops.rollout.shadow_bake_seconds": "15",
    "churnops.rollout.canary_bake_seconds": "15",
    "churnops.rollout.check_interval_seconds": "2",
    "churnops.rollout.comparison_window": "200",
}


def quiet(_: str) -> None:
    return None


def synth_fingerprint(repo_root: Path = REPO_ROOT) -> str:
    """The sources' bytes and the clone's location: an assembly synthesized with --no-staging
    names each asset by the absolute path of its source, so a second clone with the same bytes
    (or a clone since deleted) must not reuse another clone's assembly."""
    digest = hashlib.sha256(str(repo_root.resolve()).encode())
    digest.update(repr(sorted(TWIN_CONTEXT.items())).encode())
    for name in _SYNTH_INPUTS:
        path = repo_root / name
        files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                digest.update(str(file.relative_to(repo_root)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def synth_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "churnops" / "synth"


def synthesize(repo_root: Path = REPO_ROOT, progress: Progress = quiet) -> Path:
    """The CDK app's cloud assembly (cdk.out) for the current sources, synthesized once per
    fingerprint with the CDK CLI and cached; returns the assembly directory."""
    fingerprint = synth_fingerprint(repo_root)
    out = synth_cache_root() / fingerprint
    if (out / f"{STACK_NAME}.template.json").is_file():
        progress(f"template: cached synthesis {fingerprint}")
        return out
    cdk = repo_root / "node_modules" / ".bin" / "cdk"
    if not (repo_root / "app.py").is_file():
        raise ChurnOpsError(f"no CDK app at {repo_root / 'app.py'}: nothing to provision")
    if not cdk.is_file():
        raise ChurnOpsError(f"CDK CLI not found at {cdk}: run the set-up script (npm ci)")
    progress("template: synthesizing the CDK app (first run after a change, ~1 min)")
    tmp = out.with_name(f"{fingerprint}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    result = subprocess.run(  # noqa: S603 - the project's own CDK CLI, fixed arguments
        # --no-staging: the assembly names each asset's source instead of copying it (the twin
        # runs the sources; copies of the build contexts would only fill the cache)
        [str(cdk), "synth", "--quiet", "--no-staging", "--output", str(tmp)]
        + [arg for key, value in TWIN_CONTEXT.items() for arg in ("-c", f"{key}={value}")],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not (tmp / f"{STACK_NAME}.template.json").is_file():
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-4:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise ChurnOpsError(f"cdk synth failed (exit {result.returncode}): {tail}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if (out / f"{STACK_NAME}.template.json").is_file():
        shutil.rmtree(tmp, ignore_errors=True)  # another process synthesized it meanwhile
        return out
    shutil.rmtree(out, ignore_errors=True)  # an incomplete directory from a crash
    try:
        tmp.rename(out)
    except OSError:  # lost a race with another process: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
        return out
    # keep the few most recent assemblies (switching branches back and forth stays fast)
    older = sorted(
        (p for p in out.parent.iterdir() if p.is_dir() and p != out and ".tmp-" not in p.name),
        key=lambda p: p.stat().st_mtime,
    )
    for stale in older[:-4]:
        shutil.rmtree(stale, ignore_errors=True)
    return out
