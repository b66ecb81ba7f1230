"""`python -m model_prep export RECIPE... [--source S] [--out DIR]`, `python -m model_prep verify models/<id>` and
`python -m model_prep list`."""

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from .errors import PrepError
from .recipes import DEFAULT_EXPORTS, RECIPES, Floor, Recipe, get_recipe


def _floor(text: str) -> Floor:
    try:
        top1, ratio = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--floor wants MIN_TOP1,MAX_PERPLEXITY_RATIO (e.g. 0.97,1.02), not {text!r}"
        ) from None
    return Floor(top1, ratio)


def with_floor(recipe: Recipe, floor: Floor) -> Recipe:
    """`recipe` held to `floor`; its GGUF too."""
    recipe = replace(recipe, floor=floor)
    return replace(recipe, gguf=replace(recipe.gguf, floor=None)) if recipe.gguf else recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="model_prep", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="export recipes into a models folder")
    export.add_argument("recipes", nargs="*", default=list(DEFAULT_EXPORTS))
    export.add_argument("--source", help="hub id, local checkpoint folder, .gguf or .whl (one recipe only)")
    export.add_argument("--out", type=Path, default=Path("models"), help="models folder (default: models)")
    export.add_argument("--cache", type=Path, help="download/conversion cache (default: OUT/.cache)")
    export.add_argument(
        "--floor",
        type=_floor,
        help="MIN_TOP1,MAX_PERPLEXITY_RATIO for the shipped variants instead of the recipe's (e.g. 0,inf for a "
        "random-weight checkpoint of a recipe's shapes, whose fidelity means nothing); the GGUF's too",
    )
    export.add_argument(
        "--all-variants",
        action="store_true",
        help="build and ship every ONNX variant (fp32, q8, q4, q4f16), not only those a device loads (for the bench)",
    )
    verify = sub.add_parser(
        "verify",
        help="re-verify an existing export: every file's sha256, and every variant re-scored against torch where the "
        "source can be had; exits non-zero where it no longer holds",
    )
    verify.add_argument("folder", type=Path, help="the model folder, e.g. models/smollm2-135m")
    verify.add_argument("--source", help="the weights to re-run torch on, if not the recipe's own")
    verify.add_argument("--cache", type=Path, help="download/conversion cache (default: the folder's ../.cache)")
    verify.add_argument("--floor", type=_floor, help="MIN_TOP1,MAX_PERPLEXITY_RATIO instead of the recipe's")
    sub.add_parser("list", help="list recipes")
    args = parser.parse_args(argv)

    if args.command == "list":
        for recipe in RECIPES.values():
            print(f"{recipe.id:<14} {recipe.architecture:<34} {recipe.source}")
        return 0
    try:
        if args.command == "verify":
            from .reverify import read_manifest, reverify

            recipe = None
            if args.floor:
                name = read_manifest(args.folder).recipe
                recipe = with_floor(get_recipe(name), args.floor) if name else None
            reverify(args.folder, args.source, args.cache, recipe)
            return 0
        recipes = [get_recipe(name) for name in args.recipes]
        if args.source and len(recipes) != 1:
            raise PrepError("--source applies to exactly one recipe")
        from .pipeline import run_recipe

        for recipe in recipes:
            if args.floor:
                recipe = with_floor(recipe, args.floor)
            run_recipe(recipe, args.out, args.source, args.cache, args.all_variants)
    except PrepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
