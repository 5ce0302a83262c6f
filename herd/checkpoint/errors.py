"""The one error type every checkpoint reader raises, so callers and the CLI can report it cleanly."""


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or does not match the model it claims to describe."""
