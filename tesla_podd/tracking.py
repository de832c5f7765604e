"""The only module that talks to Weights & Biases.

`wandb.mode`: online | offline | disabled. Default offline unless WANDB_MODE says otherwise. Online
mode first checks that the W&B host answers within a couple of seconds and that an API key is there, and
falls back to offline with a warning otherwise (or when wandb.init itself fails online), so a run never hangs
on a missing network nor stops for a missing key. `finish()` is safe to call twice.

As the users use it:
- `job_type` names the stages the run ran (`buffer`, `distill`, `eval`, or e.g. `buffer+distill+eval`).
- The W&B run id is kept in `<run dir>/wandb_run_id` (and read from `resume_dir` when resuming), so a resumed
  or requeued run continues the same W&B run (`resume="allow"`).
- Lineage: expert buffer (a *reference* artifact: paths and sizes, never the gigabytes) -> synthetic set
  (artifact with synset.pt + picture) -> eval table (artifact + `eval/table`, one row per network and
  architecture). Online, a run that reads a buffer or a synset marks it as its input; offline (W&B cannot
  use artifacts there) the input is recorded in the output artifact's metadata instead.
- Offline runs land in `<run dir>/wandb/offline-run-*`; upload them later with `wandb sync <that folder>`.
- Whatever the mode, every metric logged also lands in `<run dir>/metrics.csv` (metrics_file.py)."""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

from . import atomic
from .errors import check_choice
from .metrics_file import FILENAME as METRICS_FILENAME
from .metrics_file import MetricsFile, carry_over
from .sweeps import wandb_group

log = logging.getLogger(__name__)
MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id"


def _host_reachable(url: str, timeout: float = 2.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(configured: str | None) -> str:
    mode = os.environ.get("WANDB_MODE") or configured or "offline"
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    check_choice("wandb.mode", mode, MODES)
    if mode == "online":
        base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        if not _host_reachable(base):
            log.warning("W&B host %s unreachable: logging offline (sync later with `wandb sync`)", base)
            mode = "offline"
        elif not _api_key_present(base):
            log.warning("wandb.mode=online but no W&B API key was found (set WANDB_API_KEY or run `wandb login`): "
                        "logging offline; upload later with `wandb sync <run dir>/wandb/offline-run-*`")
            mode = "offline"
    return mode


def _netrc_has(host: str) -> bool:
    for path in (os.environ.get("NETRC"), Path.home() / ".netrc", Path.home() / "_netrc"):
        if path and Path(path).is_file():
            try:
                if netrc.netrc(str(path)).authenticators(host):
                    return True
            except (netrc.NetrcParseError, OSError):
                continue
    return False


def _api_key_present(base_url: str) -> bool:
    """A W&B key where wandb looks for one: WANDB_API_KEY, an identity token file, or `wandb login`'s netrc."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    return _netrc_has(urlparse(base_url).hostname or "")


def _init_online_or_offline(wandb, mode: str, **kwargs):
    """`wandb.init`; online, a failure (a rejected key, a quota, a server error) logs offline with a warning
    instead of ending the run: the metrics stay on disk and `wandb sync` uploads them later."""
    try:
        return wandb.init(mode=mode, **kwargs), mode
    except Exception as exc:
        if mode != "online":
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        log.warning("W&B online start failed (%s: %s): logging offline; upload later with "
                    "`wandb sync <run dir>/wandb/offline-run-*`", type(exc).__name__, reason)
        return wandb.init(mode="offline", **kwargs), "offline"


def job_type(stages) -> str:
    return "+".join(stages)


def run_id(cfg, run_dir: Path) -> str:
    """The W&B run id of this run dir: the one kept there (or in `resume_dir` when resuming), else a new one."""
    places = [Path(run_dir)]
    if cfg.resume is not False and cfg.resume_dir is not None:
        places.append(Path(cfg.resume_dir))
    for place in places:
        f = place / RUN_ID_FILE
        if f.is_file() and (rid := f.read_text().strip()):
            break
    else:
        rid = uuid.uuid4().hex[:12]
    atomic.write_text(rid + "\n", Path(run_dir) / RUN_ID_FILE)
    return rid


def artifact_name(*parts: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts))[:128]


class Tracker:
    def __init__(self, run=None, offline: bool = False, metrics: MetricsFile | None = None):
        self.run = run
        self.offline = offline
        self.metrics = metrics  # metrics.csv of the run dir: the curves without W&B

    @classmethod
    def start(cls, cfg, run_dir: str | Path, stages=None) -> Tracker:
        wcfg = cfg.wandb
        mode = resolve_mode(wcfg.mode)
        metrics = MetricsFile(Path(run_dir) / METRICS_FILENAME)
        if cfg.get("resume") is not False and cfg.get("resume_dir") is not None:
            carry_over(cfg.resume_dir, run_dir)  # the resumed run's curves start at its iteration 0
        if mode == "disabled":
            return cls(None, metrics=metrics)
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run, mode = _init_online_or_offline(
            wandb,
            mode,
            project=wcfg.project,
            entity=wcfg.entity,
            group=wandb_group(cfg),  # a multirun job's group names its swept keys (sweeps.py)
            name=wcfg.name,
            tags=list(wcfg.tags),
            job_type=job_type(stages if stages is not None else cfg.stages),
            id=run_id(cfg, Path(run_dir)),
            resume="allow",
            dir=str(run_dir),
            config=_plain_config(cfg),
            reinit="finish_previous",
            settings=wandb.Settings(init_timeout=60, console="off", silent=True),
        )
        return cls(run, offline=mode == "offline", metrics=metrics)

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.metrics is not None:
            self.metrics.append(metrics, step)
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def log_image(self, key: str, path: str | Path, caption: str = "", step: int | None = None) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path), caption=caption)}, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    # ---- artifacts and lineage ------------------------------------------------------------------------------
    def _use_or_record(self, artifact, inputs: dict) -> None:
        """Mark `artifact` as this run's input (online), or note it in `inputs` (offline: W&B cannot)."""
        if self.offline:
            inputs[artifact.type] = {"name": artifact.name, **artifact.metadata}
        else:
            self.run.use_artifact(artifact)

    def buffer_artifact(self, store_dir: str | Path, key: dict, num_experts: int):
        """A reference artifact for an expert buffer: expert files by path (no checksum, nothing uploaded)."""
        import wandb

        store_dir = Path(store_dir).resolve()
        art = wandb.Artifact(artifact_name("buffer", key["dataset"], store_dir.name), type="buffer",
                             metadata={"dir": str(store_dir), "num_experts": num_experts, "key": key})
        for f in sorted(store_dir.glob("expert_*.pt")):
            art.add_reference(f"file://{f}", name=f.name, checksum=False)
        if (store_dir / "manifest.json").is_file():
            art.add_reference(f"file://{store_dir / 'manifest.json'}", name="manifest.json")
        return art

    def log_buffer(self, store_dir: str | Path, key: dict, num_experts: int, produced: bool) -> None:
        """The buffer stage logs the buffer it built (`produced`); a distill run marks it as its input."""
        if self.run is None:
            return
        art = self.buffer_artifact(store_dir, key, num_experts)
        if produced:
            self.run.log_artifact(art)
        else:
            self._inputs = getattr(self, "_inputs", {})
            self._use_or_record(art, self._inputs)

    def log_synset(self, path: str | Path, picture: str | Path | None = None, metadata: dict | None = None,
                   produced: bool = True) -> None:
        """The synthetic set as an artifact (synset.pt + picture), with the inputs it came from."""
        if self.run is None:
            return
        import wandb

        path = Path(path)
        inputs = getattr(self, "_inputs", {})
        art = wandb.Artifact(artifact_name("synset", self.run.group or path.parent.name), type="synset",
                             metadata={**(metadata or {}), "path": str(path.resolve()), "inputs": dict(inputs)})
        if produced:
            art.add_file(str(path), name="synset.pt")
            if picture is not None and Path(picture).is_file():
                art.add_file(str(picture), name=Path(picture).name)
            self.run.log_artifact(art)
        else:  # an eval-only run reads a synset made elsewhere: refer to it
            art.add_reference(f"file://{path.resolve()}", name="synset.pt")
            self._inputs = inputs
            self._use_or_record(art, self._inputs)

    def log_eval_table(self, rows: list[dict], name: str = "eval/table") -> None:
        """One row per evaluated network and architecture: logged as a table now, and as an `eval` artifact
        when the eval stage is recorded (after its input synset) or at finish."""
        if self.run is None or not rows:
            return
        import wandb

        columns = list(dict.fromkeys(k for r in rows for k in r))
        table = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])
        self.run.log({name: table})
        self._pending_eval = table

    def _flush_eval(self) -> None:
        table, self._pending_eval = getattr(self, "_pending_eval", None), None
        if table is None or self.run is None:
            return
        import wandb

        art = wandb.Artifact(artifact_name("eval", self.run.group or self.run.id), type="eval",
                             metadata={"inputs": dict(getattr(self, "_inputs", {}))})
        art.add(table, "eval_table")
        self.run.log_artifact(art)

    def record_stage(self, stage: str, cfg, run_dir: str | Path) -> None:
        """After a stage: the lineage of what it read and wrote, from the files it left (buffer -> synset -> eval)."""
        if self.run is None:
            return
        run_dir = Path(run_dir)
        if stage in ("buffer", "distill"):
            from .algorithms import ALGORITHMS
            from .expert_store import open_store

            store = open_store(cfg)
            if store.manifest_path.is_file() and (stage == "buffer" or ALGORITHMS[cfg.algorithm.name].needs_buffer):
                n = int(json.loads(store.manifest_path.read_text()).get("num_experts", 0))
                self.log_buffer(store.dir, store.key, n, produced=stage == "buffer")
        if stage == "distill" and (run_dir / "synset.pt").is_file():
            self.log_synset(run_dir / "synset.pt", run_dir / "synset.png",
                            {"ipc": cfg.ipc, "dataset": cfg.dataset.name, "run_name": cfg.run_name})
        if stage == "eval":
            synset = cfg.eval.synset_path
            if synset and "distill" not in cfg.stages and Path(synset).is_file():
                self.log_synset(synset, produced=False)
            self._flush_eval()

    def finish(self) -> None:
        if self.run is not None:
            self._flush_eval()
            run, self.run = self.run, None
            run.finish()


def _plain_config(cfg) -> dict:
    """The run's config for W&B, without Hydra's own node (present when composed in-process)."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True, throw_on_missing=False) if OmegaConf.is_config(cfg[k])
            else cfg[k] for k in cfg if k != "hydra"}


def _cell(v):
    """Table cells: numbers and strings as they are, anything else as JSON text."""
    return v if v is None or isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)
