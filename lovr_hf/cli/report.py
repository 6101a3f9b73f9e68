"""``lovr report``: forwarding to the work module while its command code moves here."""

from lovr_hf.report.html import add_arguments, main  # noqa: F401
