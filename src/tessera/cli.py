"""The command line: parses arguments, calls the library, prints. No logic lives here."""

from __future__ import annotations

import argparse
import json
import sys

from tessera.errors import TesseraError


def _prune(args) -> int:
    from rich.console import Console

    from tessera.pruning.job import run_recipe
    from tessera.pruning.recipe import load_recipe
    from tessera.report import prune_rows, rich_table

    recipe = load_recipe(args.recipe)
    if args.output:
        recipe.output = args.output
    console = Console()
    result = run_recipe(recipe, progress=not args.quiet, log=console.print)
    head, rows = prune_rows(result)
    console.print(rich_table(f"{recipe.name}: per-layer sparsity", head, rows))
    console.print(
        f"accuracy: dense {result.baseline_acc:.2f}% -> pruned {result.pruned_acc:.2f}% "
        f"({result.pruned_acc - result.baseline_acc:+.2f} points), conv weights {result.conv_compression:.2f}x fewer"
    )
    if result.library:
        from tessera.sparsity import PatternLibrary

        console.print("pattern library:\n" + PatternLibrary.from_json(json.dumps(result.library)).render())
    console.print(f"pruned model saved to {result.model_path}")
    return 0


def _list(args) -> int:
    if args.what == "models":
        from tessera.models import list_models

        print("\n".join(list_models()))
    else:
        from tessera.sparsity import list_schemes

        print("\n".join(list_schemes()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="train/load a baseline, prune it as a YAML recipe says, retrain, report")
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/patdnn-8x.yaml")
    p.add_argument("--output", help="override the recipe's output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_prune)
    p = sub.add_parser("list", help="list registered models or sparsity schemes")
    p.add_argument("what", choices=["models", "schemes"])
    p.set_defaults(func=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TesseraError as exc:
        print(f"tessera: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tessera: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
