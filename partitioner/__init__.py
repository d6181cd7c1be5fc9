"""pedsam partitioner: pure logic deciding which windows of a frame go where.

Modules: :mod:`~partitioner.geometry` (the token grid cut into windows),
:mod:`~partitioner.schemes` (balanced shares of windows), :mod:`~partitioner.contiguous` (the
path behind the ``contiguous`` scheme), :mod:`~partitioner.plan` (which encoder blocks run on
workers, which on the edge), :mod:`~partitioner.assignment` (per-frame window -> executor maps
and their privacy checks). No network, no torch.

Exceptions::

    PartitionerError (Exception)         base of everything raised here
    ├── PartitionError (ValueError)      bad grid, scheme, k, secret or model plan request
    └── AssignmentError (ValueError)     an assignment breaks coverage or the per-frame cap

Messages are one readable line that says what to change.
"""

from .assignment import EDGE, Assignment, check_assignment, default_cap, fixed_assignment
from .errors import AssignmentError, PartitionError, PartitionerError
from .geometry import Window, WindowGrid
from .plan import GlobalStep, ModelPlan, SegmentStep, Step, model_plan
from .schemes import SCHEMES, Share, partition

__all__ = [
    "EDGE",
    "SCHEMES",
    "Assignment",
    "AssignmentError",
    "GlobalStep",
    "ModelPlan",
    "PartitionError",
    "PartitionerError",
    "SegmentStep",
    "Share",
    "Step",
    "Window",
    "WindowGrid",
    "check_assignment",
    "default_cap",
    "fixed_assignment",
    "model_plan",
    "partition",
]
