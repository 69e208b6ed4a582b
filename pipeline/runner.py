"""Run the stages in order, skipping those whose manifest matches their config and inputs.

Rules: a stage reruns when its config section's hash or its inputs' hash (upstream
outputs' sha256, or input files) differs from its manifest, when an output is missing, or
when it is forced (`--force`, `--only`, `--from`); once a stage reruns, every later
selected stage reruns too. Stages that are not selected must already be finished.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from clustering.distributed import World
from data.errors import ConfigError, DataNotFoundError, InputError
from data.files import save_text
from data.folders import (
    check_folder_target,
    folder_lock,
    partial_dir,
    refuse_foreign,
    replace_folder,
)
from data.runtime import env_world_size, setup_runtime, teardown_runtime
from pipeline.config import load_pipeline_config, plain
from pipeline.manifest import (
    hash_obj,
    is_current,
    outputs_hash,
    owned_entries,
    read_manifest,
    start_partial,
    write_manifest,
)
from pipeline.report import config_yaml
from pipeline.stages import STAGE_LIST
from pipeline.stages.base import Stage, StageContext
from pipeline.tracking import Tracker

STAGES = tuple(s.name for s in STAGE_LIST)
Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def select(only: str | None = None, from_stage: str | None = None) -> list[str]:
    """The stage names a run covers."""
    if only and from_stage:
        raise ConfigError("use either --only or --from, not both")
    for name in (only, from_stage):
        if name and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}")
    if only:
        return [only]
    return list(STAGES[STAGES.index(from_stage):]) if from_stage else list(STAGES)


def _hashes(stage: Stage, ctx: StageContext, selected: list[str], log: Log) -> tuple[str, str]:
    """(config hash, inputs hash); errors name the stage to run first if inputs are missing."""
    inputs: dict[str, Any] = {}
    for up in stage.requires(ctx.cfg):
        manifest = read_manifest(ctx.stage_dir(up))
        if manifest is None:
            raise DataNotFoundError(
                f"the {stage.name} stage needs the {up} stage's outputs, but "
                f"{ctx.stage_dir(up)} holds no finished run; run `python -m pipeline run "
                f"{ctx.config_path} --only {up}` first (or run without --only/--from)")
        if up not in selected:
            _warn_if_stale(up, ctx, manifest, log)
        inputs[up] = outputs_hash(manifest)
    inputs.update(stage.extra_inputs(ctx.cfg))
    return hash_obj(stage.config(ctx.cfg)), hash_obj(inputs)


def _warn_if_stale(name: str, ctx: StageContext, manifest: dict, log: Log) -> None:
    stage = next(s for s in STAGE_LIST if s.name == name)
    if manifest.get("config_hash") != hash_obj(stage.config(ctx.cfg)):
        log(f"[{name}] warning: its outputs were made with a different {name} config; "
            "using them anyway (run without --only to bring it up to date)")


def _run_stage(stage: Stage, ctx: StageContext, hashes: tuple[str, str], log: Log) -> None:
    """Run into the stage's partial folder; the finished folder replaces the old one whole."""
    folder = ctx.stage_dir(stage.name)
    refuse_foreign(folder, owned_entries(folder), f"the {stage.name} stage's folder")
    partial = partial_dir(folder)
    start_partial(partial, *hashes, keep=stage.keep)
    ctx.tracker.start()
    log(f"[{stage.name}] running -> {folder}")
    t0 = time.perf_counter()
    result = stage.run(ctx, partial)
    seconds = time.perf_counter() - t0
    write_manifest(partial, stage.name, *hashes, result.outputs, result.artifacts, seconds)
    replace_folder(folder, partial)
    brief = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in result.summary.items() if k in ("k", "nmi", "ari", "acc"))
    log(f"[{stage.name}] done in {seconds:.1f}s" + (f" ({brief})" if brief else ""))


INPUT_KEYS = ("features.embeddings", "features.labels", "features.data.root",
              "features.data.subset_file")


def _refuse_inputs_inside(cfg: Any, root: Path) -> None:
    """An input file inside the experiment folder could be replaced (or removed) by the
    very run that reads it."""
    for key in INPUT_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value and Path(value).expanduser().resolve().is_relative_to(root.resolve()):
            raise ConfigError(f"{key}={value} lies inside the experiment's output folder "
                              f"{root}, which the pipeline rewrites; copy it elsewhere first")


def run_pipeline(config_path: str | Path, overrides: Sequence[str] = (), *,
                 only: str | None = None, from_stage: str | None = None, force: bool = False,
                 log: Log = _print) -> dict[str, str]:
    """Run (or skip) each selected stage; returns {stage: "ran"|"skipped"|"disabled"}.

    Under `torchrun` (WORLD_SIZE > 1) only the cluster stage runs, sharded over the ranks:
    rank 0 decides, locks and writes exactly as one process does; the other ranks fit
    their shards when rank 0 runs the stage (`_follow`)."""
    selected = select(only, from_stage)
    cfg = load_pipeline_config(config_path, list(overrides))
    if env_world_size() <= 1:
        return _run_main(cfg, Path(config_path), selected, only, from_stage, force, log)
    if selected != ["cluster"]:
        raise ConfigError("under torchrun only the cluster stage runs (sharded over the "
                          "ranks); add --only cluster, and run the other stages in one process")
    runtime = setup_runtime(cfg.cluster.device, "cluster.device")
    try:
        world = World.current()
        if not world.is_main:
            return _follow(cfg, Path(config_path), world)
        followers = Followers(world)
        try:
            status = _run_main(cfg, Path(config_path), selected, only, from_stage, force, log,
                               followers)
        except BaseException as exc:
            followers.say("error", str(exc))
            raise
        followers.say("done")
        return status
    finally:
        teardown_runtime(runtime)


class Followers:
    """What rank 0 tells the other ranks of a sharded run. They wait in a broadcast before
    the cluster stage ("run", or "done"/"error" if it will not run) and after it ("done"
    or "error"); while they fit alongside rank 0 nothing is sent (a rank that fails then
    exits, and torchrun stops the others)."""

    def __init__(self, world: World):
        self.world, self.waiting = world, True

    def say(self, word: str, detail: str | None = None) -> None:
        if self.waiting:
            self.world.broadcast_object((word, detail))
        self.waiting = word != "run"

    def fit_done(self) -> None:
        self.waiting = True


def _follow(cfg: Any, config_path: Path, world: World) -> dict[str, str]:
    """A rank other than 0: wait for rank 0's word; fit this rank's shard when it runs the
    cluster stage. Nothing is written here."""
    root = Path(cfg.output_dir) / str(cfg.experiment)
    word, detail = world.broadcast_object(None)
    if word == "error":
        raise InputError(f"rank 0: {detail}")
    if word != "run":
        return {"cluster": "skipped"}
    ctx = StageContext(cfg=cfg, root=root, tracker=None, config_path=config_path)
    STAGE_LIST[STAGES.index("cluster")].run(ctx, None)
    word, detail = world.broadcast_object(None)  # rank 0 wrote the stage's folder (or failed)
    if word == "error":
        raise InputError(f"rank 0: {detail}")
    return {"cluster": "ran"}


def _run_main(cfg: Any, config_path: Path, selected: list[str], only: str | None,
              from_stage: str | None, force: bool, log: Log,
              followers: Followers | None = None) -> dict[str, str]:
    """The run as one process makes it (rank 0 of a sharded run tells the others when the
    cluster stage starts)."""
    check_folder_target(Path(cfg.output_dir), "output_dir")
    root = Path(cfg.output_dir) / str(cfg.experiment)
    check_folder_target(root, "the experiment folder")
    _refuse_inputs_inside(cfg, root)
    with folder_lock(root, "the experiment folder"):
        return _run_locked(cfg, root, config_path, selected, only, from_stage, force, log,
                           followers)


def _run_locked(cfg: Any, root: Path, config_path: Path, selected: list[str],
                only: str | None, from_stage: str | None, force: bool,
                log: Log, followers: Followers | None = None) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    save_text(root / "config.yaml", config_yaml(cfg))
    w = cfg.wandb
    tracker = Tracker(mode=w.mode, project=w.project, entity=w.entity, group=w.group,
                      experiment=str(cfg.experiment), root=root,
                      job_type=only or "pipeline", config=_tracked_config(cfg))
    ctx = StageContext(cfg=cfg, root=root, tracker=tracker, config_path=config_path)
    status: dict[str, str] = {}
    rerun_rest = force or bool(only) or bool(from_stage)
    try:
        for stage in STAGE_LIST:
            if stage.name not in selected:
                continue
            if not stage.enabled(cfg):
                if only == stage.name:
                    raise ConfigError(f"the {stage.name} stage is disabled; set "
                                      f"{stage.name}.enabled=true to run it")
                log(f"[{stage.name}] disabled (set {stage.name}.enabled=true to run it)")
                status[stage.name] = "disabled"
                continue
            hashes = _hashes(stage, ctx, selected, log)
            if not rerun_rest and is_current(ctx.stage_dir(stage.name), *hashes):
                log(f"[{stage.name}] up to date, skipped")
                status[stage.name] = "skipped"
                continue
            if followers is not None:  # the other ranks fit their shards alongside
                followers.say("run")
            _run_stage(stage, ctx, hashes, log)
            if followers is not None:
                followers.fit_done()
            status[stage.name] = "ran"
            rerun_rest = True
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    if tracker.mode != "disabled" and "ran" in status.values():
        log(f"W&B ({tracker.mode}) run files under {root / 'wandb'}")
    return status


def _tracked_config(cfg: Any) -> dict[str, Any]:
    return {k: plain(cfg, k) for k in ("features", "cluster", "alternate", "report")}
