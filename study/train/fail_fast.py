"""Ray Train retries a failed worker group from its last checkpoint (``FailureConfig.max_failures``), whatever the
error. A retry helps a worker or node that was lost, never an error that comes back on every attempt — a StudyError
(malformed data, a non-finite loss), a file that does not decode. ``FailFast``, a callback on Ray Train's controller,
ends the run at the first such error, so it fails once, fast, with the worker's one line."""

from __future__ import annotations

import ray.train

from study.core.errors import StudyError, cannot_succeed_on_retry, last_error_line


class FailFast(ray.train.UserCallback):
    """Ends the run when a worker's error cannot succeed on a retry: an exception raised in a controller callback is
    a controller error, which Ray Train's failure policy raises at once instead of retrying (Ray 2.60)."""

    def after_exception(self, run_context, worker_exceptions: dict) -> None:
        for rank in sorted(worker_exceptions):
            error = worker_exceptions[rank]
            cause = getattr(error, "_base_exc", error)  # the worker's own exception: no public API names it
            if cannot_succeed_on_retry(cause):
                line = str(cause) if isinstance(cause, StudyError) else f"{type(cause).__name__}: {cause}"
                raise StudyError(last_error_line(line) or f"{type(cause).__name__} on rank {rank}")
