"""``lovr doctor``: forwarding to the work module while its command code moves here."""

from lovr_hf.engine.doctor import add_arguments, main  # noqa: F401
