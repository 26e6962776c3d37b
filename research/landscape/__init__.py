"""Loss landscapes: directions in parameter space (`directions`), what is evaluated at a point with
its BatchNorm handling (`model`), 1-D and 2-D scans of loss and accuracy (`scan`), and linear
interpolation between two solutions with its barrier height (`interpolation`)."""

from research.landscape.directions import (
                                           Direction,
                                           difference,
                                           eigen_directions,
                                           normalize_direction,
                                           random_direction,
                                           random_directions,
)
from research.landscape.interpolation import InterpolationResult, barrier, interpolate
from research.landscape.model import BN_MODES, PointModel, from_logits_fn, point_model, recompute_statistics
from research.landscape.scan import ScanResult, as_chunks, scan, scan_1d, scan_2d

__all__ = ["BN_MODES", "Direction", "InterpolationResult", "PointModel", "ScanResult", "as_chunks", "barrier",
           "difference", "eigen_directions", "from_logits_fn", "interpolate", "normalize_direction",
           "point_model", "random_direction", "random_directions", "recompute_statistics", "scan", "scan_1d",
           "scan_2d"]
