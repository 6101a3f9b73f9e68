"""``lovr materialize``: the command line of :func:`lovr_hf.hub.materialize.materialize` (flags, exit code)."""

from __future__ import annotations

import argparse

from lovr_hf.cli.common import add_common_args, control_from_args
from lovr_hf.hub.materialize import MaterializeConfig, materialize


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input_folder", "--input-folder", dest="input_folder", required=True,
                   help="your copies of the source videos, laid out as `videos.source_name` says")
    p.add_argument("--clip_mode", "--clip-mode", dest="clip_mode", choices=("exact", "copy", "virtual"),
                   default=None, help="default: the mode each clip was built with")
    p.add_argument("--output_dir", "--output-dir", dest="output_dir", default=None, help="clip folder")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the size + SHA-256 check")
    add_common_args(p, chunks=True)


def main(args: argparse.Namespace) -> int:
    control = control_from_args(args)
    config = MaterializeConfig(clip_mode=args.clip_mode, output_dir=args.output_dir, verify=args.verify)
    report = materialize(control.repo, args.input_folder, config, control)
    bad = report.missing or report.altered or report.errors
    return 1 if control.strict and bad else 0
