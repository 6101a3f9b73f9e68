"""``lovr run``: forwarding to the work module while its command code moves here."""

from lovr_hf.pipeline import add_arguments, main  # noqa: F401
