"""Allow ``python -m lovr_hf`` (and ``accelerate launch -m lovr_hf``)."""

from lovr_hf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
