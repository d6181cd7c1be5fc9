"""pedsam partitioner: pure logic deciding which windows of a frame go where.

Modules: :mod:`~partitioner.geometry` (the token grid cut into windows),
:mod:`~partitioner.schemes` (balanced shares of windows), :mod:`~partitioner.contiguous` (the
path behind the ``contiguous`` scheme), :mod:`~partitioner.plan` (which encoder blocks run on
workers, which on the edge), :mod:`~partitioner.assignment` (per-frame window -> executor maps
and their privacy checks), :mod:`~partitioner.rotation` (per-frame rotation policies over a
video), :mod:`~partitioner.exposure` (the exposure ledger: what each server has seen over time),
:mod:`~partitioner.scheduler` (a policy checked against exposure budgets). No network, no torch.

Exceptions::

    PartitionerError (Exception)         base of everything raised here
    ├── PartitionError (ValueError)      bad grid, scheme, k, secret or model plan request
    ├── AssignmentError (ValueError)     an assignment breaks coverage or the per-frame cap
    └── BudgetError                      a server would exceed its exposure budget (on_exceed="stop")

Messages are one readable line that says what to change.
"""

from .assignment import EDGE, Assignment, check_assignment, default_cap, fixed_assignment
from .errors import AssignmentError, BudgetError, PartitionError, PartitionerError
from .exposure import ExposureLedger, FrameExposure, ServerExposure
from .geometry import Window, WindowGrid
from .plan import GlobalStep, ModelPlan, SegmentStep, Step, model_plan
from .rotation import ROTATIONS, RotationPolicy, make_rotation
from .scheduler import ON_EXCEED, Budget, ScheduledFrame, Scheduler
from .schemes import SCHEMES, Share, partition

__all__ = [
    "EDGE",
    "ON_EXCEED",
    "ROTATIONS",
    "SCHEMES",
    "Assignment",
    "AssignmentError",
    "Budget",
    "BudgetError",
    "ExposureLedger",
    "FrameExposure",
    "GlobalStep",
    "ModelPlan",
    "PartitionError",
    "PartitionerError",
    "RotationPolicy",
    "ScheduledFrame",
    "Scheduler",
    "SegmentStep",
    "ServerExposure",
    "Share",
    "Step",
    "Window",
    "WindowGrid",
    "check_assignment",
    "default_cap",
    "fixed_assignment",
    "make_rotation",
    "model_plan",
    "partition",
]
