"""pedsam partitioner: pure logic deciding which windows of a frame go where.

Modules: :mod:`~pedsam.partitioner.geometry` (the token grid cut into windows, and which hold
picture), :mod:`~pedsam.partitioner.schemes` (shares of windows balanced by picture),
:mod:`~pedsam.partitioner.balance` (cutting an order of windows with a stated bound),
:mod:`~pedsam.partitioner.contiguous` (the path behind the ``contiguous`` scheme),
:mod:`~pedsam.partitioner.plan` (which encoder blocks run on workers, which on the edge),
:mod:`~pedsam.partitioner.assignment` (per-frame window -> executor maps and their privacy checks),
:mod:`~pedsam.partitioner.split` (a scheme per frame size), :mod:`~pedsam.partitioner.rotation`
(per-frame rotation policies over a video), :mod:`~pedsam.partitioner.adaptive` (the policy that
follows the camera), :mod:`~pedsam.partitioner.exposure` (the exposure ledger: what each server
and coalition has seen over time), :mod:`~pedsam.partitioner.budget` (the caps),
:mod:`~pedsam.partitioner.scheduler` (a policy checked against exposure budgets). No network, no
torch.

Exceptions::

    PartitionerError (Exception)         base of everything raised here
    ├── PartitionError (ValueError)      bad grid, scheme, k, secret or model plan request
    ├── AssignmentError (ValueError)     an assignment breaks coverage or the per-frame cap
    └── BudgetError                      a server would exceed its exposure budget (on_exceed="stop")

Messages are one readable line that says what to change.
"""

from pedsam.partitioner.assignment import EDGE, Assignment, check_assignment, default_cap, fixed_assignment
from pedsam.partitioner.balance import share_bound
from pedsam.partitioner.errors import AssignmentError, BudgetError, PartitionerError, PartitionError
from pedsam.partitioner.exposure import CoalitionExposure, ExposureLedger, FrameExposure, ServerExposure
from pedsam.partitioner.geometry import Window, WindowGrid
from pedsam.partitioner.plan import GlobalStep, ModelPlan, SegmentStep, Step, model_plan
from pedsam.partitioner.rotation import ROTATIONS, RotationPolicy, make_rotation
from pedsam.partitioner.budget import AUTO, ON_EXCEED, Budget, Limits
from pedsam.partitioner.scheduler import ScheduledFrame, Scheduler
from pedsam.partitioner.schemes import SCHEMES, Share, partition

__all__ = [
    "AUTO",
    "EDGE",
    "ON_EXCEED",
    "ROTATIONS",
    "SCHEMES",
    "Assignment",
    "AssignmentError",
    "Budget",
    "BudgetError",
    "CoalitionExposure",
    "ExposureLedger",
    "FrameExposure",
    "GlobalStep",
    "Limits",
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
    "share_bound",
]
