"""What Keras said while an action ran: its Python warnings and its logged warnings.

Keras 3 reports a weight it skips with `warnings.warn` (a UserWarning); Keras 2 and tf-keras
log the same news through TensorFlow's logger ("tensorflow"), which `pytest.warns` never sees.
`outcome_and_said` catches both, so a test can assert on each stack what the user is told.
"""

import logging
import warnings

from conftest import outcome_of


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def outcome_and_said(action, error_fragments=(), said_fragments=()):
    """Runs `action()`: (outcome_of's outcome, what was said).

    What was said lists, sorted and joined by ", ", each of `said_fragments` found in a
    warning ("UserWarning: <fragment>") or in a message logged at WARNING or above to the
    "tensorflow" logger ("logged: <fragment>"); "nothing" when none was.
    """
    handler = _Collect()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome = outcome_of(action, error_fragments)
    finally:
        logger.removeHandler(handler)
    said = set()
    for warning in caught:
        said.update(
            f"{warning.category.__name__}: {fragment}"
            for fragment in said_fragments
            if fragment in str(warning.message)
        )
    for message in handler.messages:
        said.update(f"logged: {fragment}" for fragment in said_fragments if fragment in message)
    return outcome, ", ".join(sorted(said)) or "nothing"


def weight_status(now, before, saved):
    """ "loaded" when every array equals `saved` bit for bit, "kept" when every array equals
    `before`, else "partly loaded" (some arrays from the file, the others as they were)."""
    loaded = [
        saved_array is not None
        and saved_array.shape == array.shape
        and (array == saved_array).all()
        for array, saved_array in zip(now, saved, strict=True)
    ]
    kept = [(array == old).all() for array, old in zip(now, before, strict=True)]
    if all(loaded):
        return "loaded"
    if all(kept):
        return "kept"
    if all(is_loaded or is_kept for is_loaded, is_kept in zip(loaded, kept, strict=True)):
        return "partly loaded"
    return "changed"
