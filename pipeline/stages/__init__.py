"""The pipeline's stages, in the order they run."""

from pipeline.stages import alternate, cluster, features, report

STAGE_LIST = (features.STAGE, cluster.STAGE, alternate.STAGE, report.STAGE)

__all__ = ["STAGE_LIST"]
