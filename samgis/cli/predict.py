"""`samgis predict IMAGE …` and `samgis evaluate --pred DIR --truth DIR`: plain images on the command line.

`predict` writes, for IMAGE = `photo.jpg`, into `--out DIR`:

- `photo.png`: the prediction as one binary mask (255 = object): the best-scoring mask of each query, or
  every automatic mask, united. `samgis evaluate` compares these with ground truth of the same name.
- `photo_q{q}_m{m}.png` (prompts), `photo_a{i}.png` (automatic) or `photo_c{i}.png` (concept): every mask on
  its own.
- `photo.json`: prompts, scores, COCO RLE of every mask, timings.
- `photo_overlay.png`: the image with the masks, points (green include, red exclude) and boxes drawn.

`--text PHRASE` (and/or `--exemplar X0,Y0,X1,Y1` boxes with `--exemplar-labels`) asks for every instance of a
concept (SAM 3's promptable concept segmentation) instead: the rules of `samgis.services.concepts` (one phrase,
`--score-threshold` in [0, 1], default 0.5, never mixed with points/boxes, a model without the capability is
refused before it runs) and the same find as `POST /v1/predict` with `text`. One mask per instance, best score
first, `photo.png` is their union, and each JSON entry carries its `concept`, `score` and predicted `box`.

`--boxes FILE` takes COCO detections (a results list `[{"image_id", "bbox": [x, y, w, h], "score"}]` or a
dataset `{"images", "annotations"}`) or Azure AutoML detections with normalized corners
(`[{"filename", "boxes": [{"box": {"topX", "topY", "bottomX", "bottomY"}, "label", "score"}]}]`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from samgis.engine.protocol import AmgOptions
from samgis.errors import InvalidRequest, SamgisError
from samgis.imaging.images import read_image
from samgis.imaging.masks import rle_encode
from samgis.imaging.render import overlay
from samgis.services.concepts import concept_label, exemplar_counts, require_concept
from samgis.services.image_predict import decode_prompts, find_instances
from samgis.services.limits import PredictLimits
from samgis.services.predict_request import parse_instance

LOSSLESS = {".png", ".tif", ".tiff", ".bmp", ".gif", ".webp"}
PICTURES = LOSSLESS | {".jpg", ".jpeg"}


# --- prompts from the command line and from detection files -------------------------------------------------

def parse_xy(text: str, n: int, what: str) -> list[float]:
    """`"x,y"` (n=2) or `"x0,y0,x1,y1"` (n=4) → floats; `InvalidRequest(what)` otherwise."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise InvalidRequest(what, f"expected {n} comma-separated numbers, got {text!r}")
    return values


def _pick(candidates: dict, image_name: str, image_id: str | None, what: str):
    """The entry of `candidates` (id → (file name or None, value)) meant for `image_name`."""
    if image_id is not None:
        for key, (_, value) in candidates.items():
            if str(key) == str(image_id):
                return value
        raise InvalidRequest("--image-id", f"{image_id!r} is not in the {what} file")
    named = [value for name, value in candidates.values() if name and Path(name).name == image_name]
    if len(named) == 1:
        return named[0]
    if len(candidates) == 1:
        return next(iter(candidates.values()))[1]
    raise InvalidRequest("--boxes", f"the {what} file has {len(candidates)} images and none is named "
                                    f"{image_name!r}; choose one with --image-id")


def load_boxes(path: Path, image_name: str, size: tuple[int, int], image_id: str | None = None,
               min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one image from a detection file: ((B, 4) float x0, y0, x1, y1 image px, (B,) scores).

    COCO `bbox` [x, y, w, h] (px) becomes [x, y, x + w, y + h]; Azure's normalized corners are scaled by
    the image `size` (H, W). Detections scoring under `min_score` are dropped (no score counts as 1).
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest("--boxes", f"cannot read {path}: {exc}") from None
    h, w = size
    rows: list[tuple[list[float], float]] = []
    if isinstance(doc, dict) and "annotations" in doc:  # COCO dataset
        names = {img["id"]: img.get("file_name") for img in doc.get("images", [])}
        by_image: dict = {}
        for a in doc["annotations"]:
            by_image.setdefault(a["image_id"], (names.get(a["image_id"]), []))[1].append(a)
        anns = _pick(by_image, image_name, image_id, "COCO") if by_image else []
        rows = [(a["bbox"], float(a.get("score", 1.0))) for a in anns]
        rows = [([x, y, x + bw, y + bh], s) for (x, y, bw, bh), s in rows]
    elif isinstance(doc, list) and doc and all(isinstance(d, dict) and "bbox" in d for d in doc):  # COCO results
        by_image = {}
        for d in doc:
            by_image.setdefault(d.get("image_id"), (None, []))[1].append(d)
        dets = _pick(by_image, image_name, image_id, "COCO results")
        rows = [([d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]],
                 float(d.get("score", 1.0))) for d in dets]
    else:  # Azure AutoML: [{"filename", "boxes": [...]}], {"boxes": [...]} or [{"box": {...}}]
        if isinstance(doc, dict):
            doc = [doc]
        if isinstance(doc, list) and doc and all(isinstance(d, dict) and "box" in d for d in doc):
            doc = [{"boxes": doc}]
        if not (isinstance(doc, list) and all(isinstance(d, dict) and "boxes" in d for d in doc)):
            raise InvalidRequest("--boxes", f"{path} is neither COCO detections nor Azure AutoML boxes")
        dets = _pick({k: (d.get("filename"), d["boxes"]) for k, d in enumerate(doc)}, image_name, image_id,
                     "detections") if doc else []
        try:
            rows = [([d["box"]["topX"] * w, d["box"]["topY"] * h, d["box"]["bottomX"] * w,
                      d["box"]["bottomY"] * h], float(d.get("score", 1.0))) for d in dets]
        except (KeyError, TypeError) as exc:
            raise InvalidRequest("--boxes", f"a box lacks topX/topY/bottomX/bottomY ({exc})") from None
    kept = [(b, s) for b, s in rows if s >= min_score]
    boxes = np.asarray([b for b, _ in kept], np.float64).reshape(-1, 4)
    return boxes, np.asarray([s for _, s in kept], np.float64)


# --- pictures -----------------------------------------------------------------------------------------------

def save_mask(mask: np.ndarray, path: Path) -> None:
    """(H, W) bool → 8-bit grayscale PNG, 255 = mask."""
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def read_mask(path: Path) -> np.ndarray:
    """(H, W) bool of a mask picture: nonzero = mask for lossless formats, ≥ 128 for JPEG."""
    with Image.open(path) as im:
        grey = np.asarray(im.convert("L"))
    return grey > 0 if Path(path).suffix.lower() in LOSSLESS else grey >= 128


# --- samgis predict --------------------------------------------------------------------------------------

def load_engine(args: argparse.Namespace):
    """The engine named by `--model`/`--checkpoint`/… (else `SAMGIS_*` variables, else defaults)."""
    from samgis.cli.options import settings_from_args
    from samgis.engine.factory import build_engine

    return build_engine(settings_from_args(args))


def run_predict(args: argparse.Namespace, engine=None) -> int:
    """`samgis predict`; `engine` overrides the one the arguments name (programs embedding this)."""
    try:
        return _predict(args, engine)
    except SamgisError as exc:
        print(f"samgis predict: {exc.message}", file=sys.stderr)
        return 2


#: Fields of `parse_instance`'s errors for concept prompts → the options that gave them.
_CONCEPT_OPTIONS = {"arguments.text": "--text", "arguments.exemplar_boxes": "--exemplar",
                    "arguments.exemplar_labels": "--exemplar-labels", "arguments.score_threshold": "--score-threshold",
                    "arguments.multimask": "--multimask"}


def _concept_fields(obj: dict, limits: PredictLimits, image: np.ndarray):
    """`parse_instance` of a concept instance dict, its errors naming the command-line options."""
    try:
        return parse_instance(obj, "arguments", None, limits, image=image)
    except InvalidRequest as exc:
        head, _, rest = exc.field.partition("[")
        option = _CONCEPT_OPTIONS.get(head)
        if option is None:
            raise
        raise InvalidRequest(option + (f"[{rest}" if rest else ""), exc.message.split(": ", 1)[-1]) from None


def _predict(args: argparse.Namespace, engine) -> int:
    t_start = time.perf_counter()
    src = Path(args.image)
    try:
        raw = src.read_bytes()
    except OSError as exc:
        raise InvalidRequest("IMAGE", f"cannot read {src}: {exc.strerror}") from None
    limits = PredictLimits(max_pixels=args.max_pixels, max_prompts=10_000, max_points_per_side=64,
                           max_grid_points=64 * 64 * 4)
    image = read_image(raw, "IMAGE", limits.max_pixels)
    if args.text is not None or args.exemplar or args.exemplar_labels is not None:
        return _predict_concept(args, engine, src, image, limits, t_start)
    if args.score_threshold is not None:
        raise InvalidRequest("--score-threshold", "applies to concept prompts (--text / --exemplar) only; point, "
                                                  "box and automatic masks are kept by their own thresholds")
    points = [parse_xy(p, 2, f"--points {p}") for p in args.points or []]
    boxes = [parse_xy(b, 4, f"--box {b}") for b in args.box or []]
    if args.boxes:
        from_file, _ = load_boxes(Path(args.boxes), src.name, image.shape[:2], args.image_id, args.min_score)
        boxes += from_file.tolist()
        if len(from_file) == 0 and not points and not boxes:
            raise InvalidRequest("--boxes", f"no box for {src.name} (score ≥ {args.min_score}) in {args.boxes}")
    obj = {"points": points, "boxes": boxes, "multimask": args.multimask,
           "points_per_side": args.points_per_side, "pred_iou_thresh": args.pred_iou_thresh,
           "stability_score_thresh": args.stability_score_thresh, "box_nms_thresh": args.box_nms_thresh,
           "min_mask_region_area": args.min_mask_region_area}
    if args.labels is not None:
        obj["labels"] = args.labels
    inst = parse_instance(obj, "arguments", None, limits, image=image)
    engine = engine or load_engine(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = src.stem
    t0 = time.perf_counter()
    embedding = engine.embed(image)
    timings = {"embed": round((time.perf_counter() - t0) * 1000, 1)}
    t0 = time.perf_counter()
    entries: list[dict] = []
    shown: list[np.ndarray] = []
    if inst.prompts is None:
        records = engine.generate(embedding, inst.amg, image)
        for i, r in enumerate(records):
            name = f"{stem}_a{i:03d}.png"
            save_mask(r["segmentation"], out_dir / name)
            shown.append(r["segmentation"])
            entries.append({"file": name, "rle": rle_encode(r["segmentation"]),
                            **{k: v for k, v in r.items() if k != "segmentation"}})
        union = np.any(shown, axis=0) if shown else np.zeros(image.shape[:2], bool)
    else:
        result = decode_prompts(engine, embedding, inst.prompts, inst.multimask, limits.decode_bytes)
        for q, (masks, scores) in enumerate(zip(result.masks, result.scores)):
            for m, (mask, score) in enumerate(zip(masks, scores)):
                name = f"{stem}_q{q}_m{m}.png"
                save_mask(mask, out_dir / name)
                entries.append({"file": name, "query": q, "index": m, "score": float(score),
                                "area": int(mask.sum()), "rle": rle_encode(mask)})
            shown.append(masks[int(np.argmax(scores))])
        union = np.any(shown, axis=0)
    timings["masks"] = round((time.perf_counter() - t0) * 1000, 1)
    save_mask(union, out_dir / f"{stem}.png")
    p = inst.prompts
    overlay(image, shown, None if p is None else p.points, None if p is None else p.labels,
            None if p is None else p.boxes).save(out_dir / f"{stem}_overlay.png")
    timings["total"] = round((time.perf_counter() - t_start) * 1000, 1)
    doc = {"image": str(src), "image_size": list(image.shape[:2]), "model": engine.model_id,
           "mode": "automatic" if p is None else "prompts",
           "prompts": None if p is None else {"points": p.points.tolist(), "labels": p.labels.tolist(),
                                              "boxes": p.boxes.tolist()},
           "masks": entries, "timings_ms": timings}
    (out_dir / f"{stem}.json").write_text(json.dumps(doc))
    for e in entries:
        score = e.get("score", e.get("predicted_iou"))
        print(f"{e['file']}  score {score:.3f}  area {e['area']} px")
    print(f"{len(entries)} masks of {src.name} ({image.shape[1]} × {image.shape[0]} px) in {out_dir}/ "
          f"({timings['total'] / 1000:.1f} s)")
    return 0


def _predict_concept(args: argparse.Namespace, engine, src: Path, image: np.ndarray, limits: PredictLimits,
                     t_start: float) -> int:
    """`samgis predict --text/--exemplar`: every instance of the concept in `image` ((H, W, 3) uint8 RGB, image
    px), through `parse_instance` and `find_instances`, the code `POST /v1/predict` runs for `text`."""
    clicks = [name for name, given in (("--points", args.points), ("--labels", args.labels is not None),
                                       ("--box", args.box), ("--boxes", args.boxes)) if given]
    if clicks:
        what = "--text" if args.text is not None else "--exemplar"
        raise InvalidRequest(what, f"concept prompts (find every instance) cannot be mixed with {clicks[0]} "
                                   "(segment one object); run predict twice")
    obj: dict = {"exemplar_boxes": [parse_xy(b, 4, f"--exemplar {b}") for b in args.exemplar or []],
                 "multimask": args.multimask}
    if args.text is not None:
        obj["text"] = args.text
    if args.exemplar_labels is not None:
        obj["exemplar_labels"] = args.exemplar_labels
    if args.score_threshold is not None:
        obj["score_threshold"] = args.score_threshold
    inst = _concept_fields(obj, limits, image)
    concept = inst.concept
    engine = engine or load_engine(args)
    require_concept(engine.describe(), concept, "--text", "--exemplar")  # before the encoder runs
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = src.stem
    t0 = time.perf_counter()
    embedding = engine.embed(image)
    timings = {"embed": round((time.perf_counter() - t0) * 1000, 1)}
    t0 = time.perf_counter()
    masks, scores, boxes = find_instances(engine, inst, embedding)
    timings["find"] = round((time.perf_counter() - t0) * 1000, 1)
    label = concept_label(concept)
    entries: list[dict] = []
    for i, (mask, score, box) in enumerate(zip(masks, scores, boxes)):
        name = f"{stem}_c{i:03d}.png"
        save_mask(mask, out_dir / name)
        entries.append({"file": name, "instance": i, "concept": label, "score": round(float(score), 6),
                        "box": [float(v) for v in box], "area": int(mask.sum()), "rle": rle_encode(mask)})
    save_mask(masks.any(axis=0) if len(masks) else np.zeros(image.shape[:2], bool), out_dir / f"{stem}.png")
    overlay(image, list(masks), None, None, concept.boxes).save(out_dir / f"{stem}_overlay.png")
    timings["total"] = round((time.perf_counter() - t_start) * 1000, 1)
    doc = {"image": str(src), "image_size": list(image.shape[:2]), "model": engine.model_id, "mode": "concept",
           "concept": label, "score_threshold": inst.score_threshold,
           "prompts": {"text": concept.text, "exemplar_boxes": concept.boxes.tolist(),
                       "exemplar_labels": concept.labels.tolist(), "exemplars": exemplar_counts(concept)},
           "masks": entries, "timings_ms": timings}
    (out_dir / f"{stem}.json").write_text(json.dumps(doc))
    for e in entries:
        print(f"{e['file']}  {label}  score {e['score']:.3f}  area {e['area']} px")
    print(f"{len(entries)} instances of {label!r} in {src.name} ({image.shape[1]} × {image.shape[0]} px, score ≥ "
          f"{inst.score_threshold}) in {out_dir}/ ({timings['total'] / 1000:.1f} s)")
    return 0


# --- samgis evaluate -------------------------------------------------------------------------------------

def mask_metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    """Binary segmentation metrics of two (H, W) bool masks.

    `iou`: foreground IoU (1 when both are empty); `miou`: mean of foreground and background IoU;
    `pixel_accuracy`: share of pixels labelled alike; plus the confusion counts `tp`, `fp`, `fn`, `tn`.

    >>> t = np.zeros((20, 20), bool); t[:10, :10] = True
    >>> p = np.zeros((20, 20), bool); p[:10, 5:15] = True
    >>> {k: round(v, 4) for k, v in mask_metrics(p, t).items() if k in ("iou", "pixel_accuracy")}
    {'iou': 0.3333, 'pixel_accuracy': 0.75}
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction is {pred.shape[1]} × {pred.shape[0]} px, truth {truth.shape[1]} × "
                         f"{truth.shape[0]} px")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    tn = int(pred.size) - tp - fp - fn
    return _from_counts(tp, fp, fn, tn)


def _from_counts(tp: int, fp: int, fn: int, tn: int) -> dict:
    iou_fg = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    iou_bg = tn / (tn + fp + fn) if tn + fp + fn else 1.0
    total = tp + fp + fn + tn
    return {"iou": iou_fg, "miou": (iou_fg + iou_bg) / 2, "pixel_accuracy": (tp + tn) / total if total else 1.0,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def evaluate_dirs(pred_dir: Path, truth_dir: Path) -> dict:
    """Metrics of every truth mask in `truth_dir` against the prediction with the same stem in `pred_dir`.

    A missing prediction counts as an empty mask (and is flagged `missing`). Returns `{"images": [rows],
    "mean": per-image means, "pooled": metrics of all pixels together}`.
    """
    def pictures(folder: Path, what: str) -> list[Path]:
        if not Path(folder).is_dir():
            raise InvalidRequest(what, f"{folder} is not a folder")
        return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in PICTURES)

    truths = pictures(truth_dir, "--truth")
    if not truths:
        raise InvalidRequest("--truth", f"no mask pictures in {truth_dir}")
    preds = {p.stem: p for p in pictures(pred_dir, "--pred")}
    rows = []
    sums = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for t in truths:
        truth = read_mask(t)
        p = preds.get(t.stem)
        pred = read_mask(p) if p is not None else np.zeros_like(truth)
        try:
            m = mask_metrics(pred, truth)
        except ValueError as exc:
            raise InvalidRequest("--pred", f"{t.stem}: {exc}") from None
        rows.append({"image": t.stem, **m, "missing": p is None})
        for k in sums:
            sums[k] += m[k]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("iou", "miou", "pixel_accuracy")}
    return {"images": rows, "mean": mean, "pooled": _from_counts(**sums)}


def run_evaluate(args: argparse.Namespace) -> int:
    """`samgis evaluate`: print a table; write JSON and CSV (default: evaluation.json/.csv in --pred)."""
    try:
        report = evaluate_dirs(Path(args.pred), Path(args.truth))
    except SamgisError as exc:
        print(f"samgis evaluate: {exc.message}", file=sys.stderr)
        return 2
    width = max(8, *(len(r["image"]) for r in report["images"]))
    print(f"{'image':<{width}}  {'IoU':>7}  {'mIoU':>7}  {'pixel acc':>9}")
    for r in report["images"]:
        note = "  (no prediction)" if r["missing"] else ""
        print(f"{r['image']:<{width}}  {r['iou']:7.4f}  {r['miou']:7.4f}  {r['pixel_accuracy']:9.4f}{note}")
    for name in ("mean", "pooled"):
        s = report[name]
        print(f"{name:<{width}}  {s['iou']:7.4f}  {s['miou']:7.4f}  {s['pixel_accuracy']:9.4f}")
    json_path = Path(args.json) if args.json else Path(args.pred) / "evaluation.json"
    csv_path = Path(args.csv) if args.csv else Path(args.pred) / "evaluation.csv"
    json_path.write_text(json.dumps(report, indent=1))
    with csv_path.open("w", newline="") as f:
        cols = ["image", "iou", "miou", "pixel_accuracy", "tp", "fp", "fn", "tn", "missing"]
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(report["images"])
        writer.writerow({"image": "pooled", **report["pooled"], "missing": ""})
    print(f"wrote {json_path} and {csv_path}")
    missing = sum(r["missing"] for r in report["images"])
    if missing:
        print(f"{missing} truth masks had no prediction (counted as empty)", file=sys.stderr)
    return 0


# --- parsers ---------------------------------------------------------------------------------------------

def add_predict_parsers(subparsers) -> None:
    from samgis.cli.options import add_model_options

    """Register `predict` and `evaluate` on `samgis`'s sub-command parsers."""
    d = AmgOptions()
    p = subparsers.add_parser("predict", help="segment a PNG/JPEG with point/box prompts, every instance of a "
                                                   "concept (--text), or everything in it",
                              description="Prompts are image pixels, x = column, y = row, integer = pixel "
                                          "centre. Without prompts every object is segmented (automatic mode).")
    p.add_argument("image", help="PNG or JPEG file")
    p.add_argument("--points", nargs="+", metavar="X,Y", help="point prompts")
    p.add_argument("--labels", nargs="+", type=int, choices=[0, 1], help="per point: 1 include, 0 exclude")
    p.add_argument("--box", action="append", metavar="X0,Y0,X1,Y1", help="a box prompt (repeatable)")
    p.add_argument("--boxes", metavar="FILE", help="box prompts from COCO detection JSON or Azure AutoML "
                                                   "detections (normalized topX/topY/bottomX/bottomY)")
    p.add_argument("--image-id", help="which image of the --boxes file (default: by file name, or the only one)")
    p.add_argument("--min-score", type=float, default=0.0, help="ignore detections scoring lower")
    p.add_argument("--text", metavar="PHRASE", help="find every instance of this concept (a short noun phrase, "
                                                    "e.g. \"red roof\"); needs a model with the text capability")
    p.add_argument("--exemplar", action="append", metavar="X0,Y0,X1,Y1",
                   help="an exemplar box of the concept (repeatable); needs the exemplars capability")
    p.add_argument("--exemplar-labels", nargs="+", type=int, choices=[0, 1],
                   help="per exemplar: 1 more like this (default), 0 not like this")
    p.add_argument("--score-threshold", type=float, help="concept prompts: keep instances scoring at least this "
                                                         "(0..1, default 0.5)")
    p.add_argument("--multimask", action="store_true", help="three candidate masks per query")
    p.add_argument("--out", default="predictions", help="output folder (default ./predictions)")
    p.add_argument("--points-per-side", type=int, default=d.points_per_side, help="automatic mode grid")
    p.add_argument("--pred-iou-thresh", type=float, default=d.pred_iou_thresh)
    p.add_argument("--stability-score-thresh", type=float, default=d.stability_score_thresh)
    p.add_argument("--box-nms-thresh", type=float, default=d.box_nms_thresh)
    p.add_argument("--min-mask-region-area", type=int, default=d.min_mask_region_area)
    p.add_argument("--max-pixels", type=int, default=64_000_000, help="refuse larger images")
    add_model_options(p, providers=False)
    p.set_defaults(func=run_predict)

    e = subparsers.add_parser("evaluate", help="mean IoU and pixel accuracy of predicted masks vs ground truth",
                              description="Pairs masks by file stem (pred/NAME.png with truth/NAME.png); "
                                          "nonzero pixels are the object.")
    e.add_argument("--pred", required=True, help="folder of predicted masks (e.g. `samgis predict --out`)")
    e.add_argument("--truth", required=True, help="folder of ground-truth masks")
    e.add_argument("--json", help="report file (default PRED/evaluation.json)")
    e.add_argument("--csv", help="per-image table (default PRED/evaluation.csv)")
    e.set_defaults(func=run_evaluate)
