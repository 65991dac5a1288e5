"""Experiment grids (variance sweep, IP sweep, discrete comparison) over one resumable runner."""
from latentar.sweeps.runner import SweepRunner, aggregate, cell_id, parse_list

__all__ = ["SweepRunner", "aggregate", "cell_id", "parse_list"]
