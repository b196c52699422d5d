"""Cohort batch runs: every case of a folder or CSV list, isolated, resumable, in
parallel on this machine or on a Dask cluster.

Entry point: :func:`run_batch` (the ``ctmusclebone batch`` command calls it). One module
per job: :mod:`.cases` (finding the cases), :mod:`.options` (shared options and their
fingerprint), :mod:`.runner` (one case -> one record), :mod:`.marker` (completion
marker), :mod:`.executors` (process pool, Dask), :mod:`.cohort` (cohort tables),
:mod:`.progress` (bar and time left). Dask is imported only when a scheduler is given.
"""

from .cases import CaseSpec, discover_cases
from .options import BatchOptions
from .progress import BatchProgress
from .run import BatchResult, run_batch
from .runner import CaseRecord, run_case

__all__ = ["BatchOptions", "BatchProgress", "BatchResult", "CaseRecord", "CaseSpec",
           "discover_cases", "run_batch", "run_case"]
