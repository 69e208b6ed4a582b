"""The end-to-end pipeline: features -> cluster -> (alternate) -> report, with reruns
skipped when a stage's config and inputs are unchanged. Entry point: `python -m pipeline`.
"""

from pipeline.runner import STAGES, run_pipeline

__all__ = ["STAGES", "run_pipeline"]
