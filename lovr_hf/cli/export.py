"""``lovr export``: forwarding to the work module while its command code moves here."""

from lovr_hf.hub.export import add_arguments, main  # noqa: F401
