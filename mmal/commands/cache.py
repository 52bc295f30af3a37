"""Commands on cache and index files: ``synth`` and ``inspect``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mmal.commands.options import FILE_PATH, force_option, json_option, seed_option
from mmal.errors import CacheError, one_line

# Library code is imported inside each command body, so that `mmal --help` and the other
# commands do not load what these need (NumPy, h5py).

#: mmal.cache.fusion.FUSIONS, spelled out so that the option needs no import of mmal.cache
#: (tests/cache/test_synthetic.py checks the two agree).
SYNTH_FUSIONS = ("concat", "sum", "feature-sum", "nl-gate")


@click.command("synth")
@click.argument("path", type=FILE_PATH)
@click.option("--num-samples", "-n", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Pool size N (labeled and unlabeled).")
@click.option("--num-classes", "-k", type=click.IntRange(min=2), default=10, show_default=True,
              help="Number of classes K.")
@click.option("--dims", default="64,32", show_default=True,
              help="Comma-separated feature width per modality; its length sets M.")
@click.option("--fusion", type=click.Choice(SYNTH_FUSIONS), default="concat", show_default=True,
              help="How the modality blocks form the head input (docs/cache.md, Fusions): "
                   "concat; sum, the paper's mean of the unimodal heads; feature-sum, one head "
                   "over the summed features; nl-gate, a nonlinear gate whose head input is "
                   "stored. feature-sum and nl-gate need equal --dims.")
@click.option("--dominance", type=click.FloatRange(min=1.0), default=3.0, show_default=True,
              help="Head strength ratio between consecutive modalities (1 = balanced).")
@click.option("--labeled-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1,
              show_default=True, help="Share of the pool marked labeled.")
@click.option("--multi-label", is_flag=True, default=False,
              help="Sigmoid heads and multi-hot labels.")
@click.option("--mc-samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="MC-dropout passes to store (needed by BALD); 0 stores none.")
@click.option("--dtype", "feature_dtype", type=click.Choice(["float32", "float16"]),
              default="float32", show_default=True, help="Storage dtype of the features.")
@seed_option
@force_option
def synth_command(path, num_samples, num_classes, dims, fusion, dominance, labeled_fraction,
                  multi_label, mc_samples, feature_dtype, seed, force):
    """Write a synthetic, self-consistent feature cache to PATH.

    Logits and coalition logits come from a random head over the stored
    features (for nl-gate: over a random nonlinear gate's latents), so the
    cache is consistent exactly as extraction would write it. Useful for
    trying strategies, tests and benchmarks.

    \b
    Example:
      mmal synth pool.h5 -n 5000 -k 20 --dims 128,64 --mc-samples 10
      mmal synth av.h5 -n 5000 -k 30 --dims 512,512 --fusion nl-gate
    """
    from mmal.cache.synthetic import make_synthetic_cache

    try:
        widths = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise click.BadParameter(f"{dims!r} is not a comma-separated list of integers",
                                 param_hint="--dims") from None
    if min(widths) < 1:
        raise click.BadParameter(f"{dims!r}: every feature width must be >= 1 (e.g. 64,32)",
                                 param_hint="--dims")
    if fusion in ("feature-sum", "nl-gate") and len(set(widths)) > 1:
        raise click.BadParameter(f"{dims!r}: {fusion} fusion needs equal widths (e.g. 64,64)",
                                 param_hint="--dims")
    make_synthetic_cache(
        path, num_samples=num_samples, num_classes=num_classes, feature_dims=widths,
        fusion=fusion, dominance=dominance, labeled_fraction=labeled_fraction,
        multi_label=multi_label, mc_samples=mc_samples, feature_dtype=feature_dtype,
        seed=seed, overwrite=force,
    )
    click.echo(f"wrote {path}")


@click.command("inspect")
@click.argument("path", type=FILE_PATH)
@click.option("--cache", "cache_path", type=FILE_PATH,
              default=None, help="For an index file: also check its ids exist in this cache.")
@click.option("--verify", is_flag=True, default=False,
              help="For a cache: recompute its content fingerprint and compare it with the stored "
                   "one (reads every field); exit 1 on a mismatch.")
@json_option
def inspect_command(path, cache_path, verify, as_json):
    """Summarize a feature cache (.h5), an index file (.json) or a selection's diagnostics (.npz).

    For a cache: schema version, pool size, labeled and unlabeled counts,
    classes, modalities with their widths, fusion, the head input's width and
    whether it is stored (nl-gate) or computed from the features, the share of samples each modality dominates by
    Shapley contribution, and a check that every stored value is finite.
    For an index file: kind, count, first ids and provenance.
    For the <stem>.diagnostics.npz that `mmal select` writes: strategy, samples,
    array names with shapes and dtypes, and the mean contribution Phi of each
    modality (load the arrays with numpy.load).

    With --verify, for a cache: only one line, whether its data and metadata
    still hash to the content fingerprint mmal stamped when it wrote the file.

    \b
    Example:
      mmal inspect rounds/003/cache.h5 --json
      mmal inspect rounds/003/cache.h5 --verify
      mmal inspect rounds/003/selections/bmmal-b500-s0.json --cache rounds/003/cache.h5
      mmal inspect rounds/003/selections/bmmal-b500-s0.diagnostics.npz
    """
    import h5py

    from mmal.cache import check_ids_in_cache, open_cache, read_index
    from mmal.cache.summary import format_summary, summarize_cache, summarize_index

    if verify and path.suffix in (".npz", ".json"):
        raise click.BadParameter(f"{path}: --verify checks a feature cache (.h5), not a "
                                 f"{path.suffix} file", param_hint="--verify")
    if path.suffix == ".npz":
        from mmal.select.diagnostics import summarize_diagnostics

        summary = summarize_diagnostics(path)
    elif path.suffix == ".json":
        index = read_index(path)
        summary = summarize_index(index)
        if cache_path is not None:
            with open_cache(cache_path) as cache:
                check_ids_in_cache(index, cache.ids, str(cache_path))
            summary["ids_in_cache"] = str(cache_path)
    else:
        if path.is_file() and not h5py.is_hdf5(path):
            raise CacheError(f"{path}: is not an HDF5 file; mmal inspect takes a cache (.h5), an "
                             "index file (.json) or a selection's diagnostics (.npz)")
        try:
            with open_cache(path) as cache:
                if verify:  # a mismatch raises CacheError: one Error line, exit 1
                    _echo_verified(path, cache.verify(), as_json)
                    return
                summary = summarize_cache(cache)
        except (KeyError, OSError, RuntimeError, ValueError) as exc:
            # h5py reports a damaged file by the HDF5 error it hit, as one of these types
            raise CacheError(f"{path}: cannot be read, the file is corrupted "
                             f"({one_line(exc, 200)}); extract or write it again") from None
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


def _echo_verified(path: Path, fingerprint: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"file": str(path), "content_fingerprint": fingerprint,
                               "verify": "ok"}, indent=2))
    else:
        click.echo(f"{path}: content fingerprint ok ({fingerprint})")
