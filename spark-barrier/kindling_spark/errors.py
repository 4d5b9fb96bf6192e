"""The errors a fit can raise, shared by the driver, the task and the
estimator (a DataError is also a ValueError, so bad input reads as one)."""


class KindlingSparkError(RuntimeError):
    """Base class of the launcher's errors."""


class DataError(KindlingSparkError, ValueError):
    """The training rows are unusable (wrong length, bad label, empty...)."""


class NotEnoughSlotsError(KindlingSparkError):
    """The cluster cannot run every task of the barrier stage at once."""


class TrainingError(KindlingSparkError):
    """Training failed on every attempt; the message has the ranks' last lines."""


class TrainingCancelled(KindlingSparkError):
    """The job group was cancelled while training."""
