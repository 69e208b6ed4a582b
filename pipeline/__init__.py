"""The end-to-end pipeline: features -> cluster -> (alternate) -> report, with reruns
skipped when a stage's config and inputs are unchanged. Entry point: `python -m pipeline`.

`run_pipeline` and `STAGES` are imported on first use, so that loading a config
(`pipeline.config`) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.runner import STAGES, run_pipeline

__all__ = ["STAGES", "run_pipeline"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from pipeline import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
