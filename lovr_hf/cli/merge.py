"""``lovr merge``: forwarding to the work module while its command code moves here."""

from lovr_hf.merge.stage import add_arguments, main  # noqa: F401
