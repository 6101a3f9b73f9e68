"""``lovr eval``: forwarding to the work module while its command code moves here."""

from lovr_hf.evaluation.run import add_arguments, main  # noqa: F401
