"""``lovr`` console script: a thin argparse layer; each subcommand is one module ``lovr_hf.cli.<command>``.

A command module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Modules are imported only
when their command runs, so ``lovr --help`` stays instant and an optional extra never breaks another command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "segment": ("lovr_hf.cli.segment", "cut long videos into scene clips (videos -> clips)"),
    "caption": ("lovr_hf.cli.caption", "caption every clip with a vision-language model (clips -> clip_captions)"),
    "merge": ("lovr_hf.cli.merge", "merge clip captions into cluster and full-video captions with an LLM"),
    "eval": ("lovr_hf.cli.eval", "embed captions/clips/videos with a model and score pass@k"),
    "run": ("lovr_hf.cli.run", "run segment -> caption -> merge -> eval end to end, resuming"),
    "demo": ("lovr_hf.cli.demo", "offline end-to-end demo on generated sample videos with tiny local models"),
    "push": ("lovr_hf.cli.push", "publish a benchmark repo to the Hugging Face Hub"),
    "import-release": ("lovr_hf.cli.import_release", "import the official LoVR release into a benchmark repo"),
    "info": ("lovr_hf.cli.info", "show where a benchmark stands, or summarise a parquet file"),
    "export": ("lovr_hf.cli.export", "export a benchmark repo in the original LoVR file layout (JSONL, JSON/CSV)"),
    "report": ("lovr_hf.cli.report", "write a static HTML page per scored model: results, plots, hits and misses"),
    "doctor": ("lovr_hf.cli.doctor", "check a repo's integrity (shards, card, work state, locks); --fix repairs"),
    "materialize": ("lovr_hf.cli.materialize", "rebuild clip files of an index-only repo from your own videos"),
}


def _module(name: str):
    return importlib.import_module(COMMANDS[name][0])


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help shows its default, unless its text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default in ([], ())  # 0 is a default
        if "default" in text.lower() or unset or action.nargs == 0:
            return text  # switches and unset options: "(default: None/False)" says nothing
        return super()._get_help_string(action)


def _help_for_every_flag(parser: argparse.ArgumentParser) -> list[str]:
    """A flag added without help text still shows its default in ``--help`` (argparse lists such a flag
    with nothing beside it): its help becomes the default, or says it is off / required. A safety net only:
    returns the flags that needed it (tests/test_cli_errors.py asserts there are none)."""
    generic = []
    for action in parser._actions:
        if action.help or action.help == argparse.SUPPRESS or not action.option_strings:
            continue
        generic.append(action.option_strings[-1])
        if action.required:
            action.help = "required"
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            action.help = "a switch (default: off)" if action.default is False else "a switch (default: on)"
        elif action.default is None:
            action.help = "default: not set"
        else:
            action.help = "default: %(default)s"
    return generic


def flags_on_generic_help(command: str) -> list[str]:
    """The flags of ``command`` whose help would come from the generic fallback (none should)."""
    p = argparse.ArgumentParser(prog=f"lovr {command}")
    _module(command).add_arguments(p)
    return _help_for_every_flag(p)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only ``command``'s subparser gets its flags (it is kept as ``parser.command_parser``
    so that a mistyped flag is reported with that command's usage, not the top-level one)."""
    # allow_abbrev=False: a flag is taken only as spelled (a prefix such as --repo would otherwise be read as
    # --repo-id, or --model as --model-path, silently)
    parser = argparse.ArgumentParser(
        prog="lovr", description="Build and evaluate LoVR-style long-video retrieval benchmarks.", allow_abbrev=False
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter,
                           allow_abbrev=False)
        if name == command:
            parser.command_parser = p  # type: ignore[attr-defined]
            try:
                _module(name).add_arguments(p)
            except ImportError as exc:
                p.set_defaults(_missing=str(exc))
            _help_for_every_flag(p)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("httpx", "urllib3", "filelock", "fsspec", "datasets.arrow_dataset"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would report these with the top-level usage: use the subcommand's
        getattr(parser, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if not args.command:
        parser.print_help()
        return 0
    if getattr(args, "_missing", None):
        print(f"lovr {args.command}: not available ({args._missing})", file=sys.stderr)
        return 2
    setup_logging(args.verbose, args.quiet)
    _forget_earlier_changes()
    try:
        code = int(_module(args.command).main(args) or 0)
        _render_cards()
    except Exception as exc:
        from lovr_hf.cli.errors import exit_code_for

        code = exit_code_for(args.command, exc, args, verbose=args.verbose)
        try:  # what the command wrote before it failed is kept (a rerun resumes): so is a current card
            _render_cards()
        except Exception as render_exc:  # the command's own error is the one to report
            logging.getLogger(__name__).warning("the card was not rendered: %s", render_exc)
    return code


def _forget_earlier_changes() -> None:
    """A command renders the cards of what it changed itself (not of a library caller's earlier writes)."""
    repo = sys.modules.get("lovr_hf.repo")
    if repo is not None:
        repo.forget_changes()


def _render_cards() -> None:
    """The card of every repo the command changed, rendered once (storage never renders; a command that never
    imported the repo module changed no repo, and ``lovr --help`` stays instant)."""
    if "lovr_hf.repo" in sys.modules:
        from lovr_hf.report.card import write_changed_cards

        write_changed_cards()


if __name__ == "__main__":
    raise SystemExit(main())
