"""The partitioner's exceptions.

::

    PartitionerError (Exception)
    ├── PartitionError (ValueError)   bad geometry, scheme, k or plan request
    ├── AssignmentError (ValueError)  an assignment breaks a privacy or coverage invariant
    ├── BudgetError                   a server would exceed its exposure budget and the
    │                                 settings say stop rather than compute on the edge
    └── FailoverError                 a worker is down and the settings leave its windows
                                      no safe place (stop rather than fail over)

The first two are ``ValueError``\\ s: they come from input a person can fix, and their message is
one readable line that says what to change.
"""

from __future__ import annotations

__all__ = ["AssignmentError", "BudgetError", "FailoverError", "PartitionError", "PartitionerError"]


class PartitionerError(Exception):
    """Base of the partitioner's exceptions."""


class PartitionError(PartitionerError, ValueError):
    """An impossible or malformed partition request; message is one readable line saying what to change."""


class AssignmentError(PartitionerError, ValueError):
    """An assignment breaks an invariant (window twice / missing / over the per-frame cap)."""


class BudgetError(PartitionerError):
    """Sending a frame as planned would exceed a server's exposure budget (``on_exceed="stop"``)."""


class FailoverError(PartitionerError):
    """A down worker's windows have no place the settings allow (``failover="stop"``)."""
