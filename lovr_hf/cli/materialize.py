"""``lovr materialize``: forwarding to the work module while its command code moves here."""

from lovr_hf.hub.materialize import add_arguments, main  # noqa: F401
