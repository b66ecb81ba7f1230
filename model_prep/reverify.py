"""`python -m model_prep verify models/<id>`: an existing export checked again, without writing to it.

Every file the manifest lists is hashed against its sha256; then, where the recipe's source can be had (the export
cache, a tiny model, the hub or --source), torch's reference is run again and every variant the manifest lists is
re-scored and gated as the export was (plan.py's table, verify/report.py). Where the recipe's own source cannot be
had (no --source, the hub unreachable), the scores verification.json recorded are held to the recipe's floors: that
catches a floor raised since, not a file that scores worse (its sha256 would).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from edge_contracts import Manifest, ManifestError

from .errors import PrepError
from .families import get_family
from .folder import MANIFEST, VERIFICATION, sha256_file
from .plan import Job, check_recipe, variants_of
from .recipes import Recipe, get_recipe
from .sources.resolve import resolve_source
from .verify import quality, report


class ExportChanged(PrepError):
    """A file of the export differs from what its manifest.json lists."""


def read_manifest(folder: Path) -> Manifest:
    try:
        manifest = Manifest.parse(json.loads((folder / MANIFEST).read_text()))
        manifest.check_config(json.loads((folder / "config.json").read_text()))
    except FileNotFoundError as err:
        raise PrepError(f"{folder}: {Path(err.filename).name} is missing (is this a model folder?)") from err
    except (json.JSONDecodeError, ManifestError) as err:
        raise PrepError(f"{folder / MANIFEST}: {err}") from err
    return manifest


def changed_files(folder: Path, manifest: Manifest) -> list[str]:
    """One line per listed file that is missing or whose size or sha256 differs from the manifest's."""
    lines = []
    for f in manifest.files:
        path = folder / f.path
        if not path.is_file():
            lines.append(f"{f.path}: missing")
        elif (size := path.stat().st_size) != f.bytes:
            lines.append(f"{f.path}: {size} bytes, manifest.json says {f.bytes}")
        elif (digest := sha256_file(path)) != f.sha256:
            lines.append(f"{f.path}: sha256 {digest}, manifest.json says {f.sha256}")
    return lines


def reverify(
    folder: Path, source: str | None = None, cache_dir: Path | None = None, recipe: Recipe | None = None, out=None
) -> None:
    """Raise a PrepError (ExportChanged, BelowQualityFloor, VerificationFailed, ...) where `folder` no longer holds
    what its manifest lists or no longer meets its recipe's gates; `recipe`: instead of the one the manifest names."""
    out = out or sys.stderr
    manifest = read_manifest(folder)
    changed = changed_files(folder, manifest)
    if changed:
        raise ExportChanged(f"{folder}: {len(changed)} file(s) differ from manifest.json: {'; '.join(changed)}")
    print(f"{manifest.id}: all {len(manifest.files)} files match manifest.json's sha256s", file=out)
    if recipe is None:
        if manifest.recipe is None:
            print(f"{manifest.id}: the manifest names no recipe; nothing to score against", file=out)
            return
        recipe = get_recipe(manifest.recipe)
    check_recipe(recipe)
    variants = [v for v in variants_of(recipe, all_variants=True) if v.dtype in manifest.dtypes]
    unscored = sorted(set(manifest.dtypes) - {v.dtype for v in variants})
    if unscored:
        print(f"{manifest.id}: recipe {recipe.id!r} has no scorer for {unscored}: not re-scored", file=out)
    try:
        source_dir = resolve_source(recipe, source, cache_dir or folder.parent / ".cache")
    except PrepError as err:
        if source is not None:  # the weights the user named must be there
            raise
        print(f"{manifest.id}: no source ({err}); holding verification.json's recorded scores to the floors", file=out)
        if not (folder / VERIFICATION).is_file():
            raise PrepError(f"{folder}: no source and no {VERIFICATION}: nothing to hold to the floors") from err
        recorded = json.loads((folder / VERIFICATION).read_text())
        for floor in dict.fromkeys(v.floor for v in variants if v.floor is not None):
            quality.require_floor(recorded, floor, tuple(v.dtype for v in variants if v.floor == floor), recipe.id)
        return
    job = Job(recipe, get_family(recipe.family), source_dir, folder)
    written = {v.dtype: v.kind.find(job, v.dtype, manifest.dtypes[v.dtype].files) for v in variants}
    with tempfile.TemporaryDirectory(prefix="model-prep-verify-") as tmp:
        result = report.verify(job, variants, written, Path(tmp) / "reference-logits")
    report.print_report(result.as_json(), out)
    result.gate()
    for v in variants:  # the runtime settings the browser reads are still those the variant was scored with
        want = v.kind.manifest(result.scores[v.dtype])
        have = {k: getattr(manifest.dtypes[v.dtype], k) for k in want}
        if have != want:
            raise ExportChanged(f"{folder}: manifest.json's dtypes.{v.dtype} says {have}; it verifies with {want}")
    print(f"{manifest.id}: every variant re-scored against torch meets its gates", file=out)
