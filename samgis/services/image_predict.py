"""Plain-image prediction: a base64 image and SAM prompts in → masks (COCO RLE, PNG or pixel polygons) out.

No HTTP here: `api/routers/predict.py` (our API, KServe, Vertex, Azure) and `samgis predict` are thin layers
over this module. `ImagePredictService` runs requests through the shared embedding cache (plain images are
keyed by the SHA-256 of their pixels) and the model's bounded encoder queue.

The request side (an instance as sent → `Instance`) is `samgis.services.predict_request` (prompts:
`samgis.services.predict_prompts`); the answer's mask encodings are `samgis.services.predict_output`; what a
request may cost is `samgis.services.limits`. This module runs an instance: embed, decode / generate / find,
encode.

Frames:

- *image px, SAM convention* (prompts): (x, y) = (column, row) in pixels of the decoded image after its
  EXIF orientation is applied; integer values are pixel centres, exactly what `SamPredictor` takes.
- *pixel edges, rasterio convention* (polygons): pixel (row i, col j) covers x in [j, j+1), y in [i, i+1),
  so a prompt at (x, y) sits at (x + 0.5, y + 0.5) in the polygon frame.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import numpy as np

from samgis.engine.cache import EmbeddingCache
from samgis.engine.protocol import AmgOptions, DecodeResult, Embedding, Engine, Prompts, require, required_capabilities
from samgis.errors import InvalidRequest
from samgis.imaging.geotiff import decode_any_image
from samgis.imaging.images import image_digest
from samgis.imaging.masks import encode_array
from samgis.services.concepts import concept_label, require_concept
from samgis.services.limits import LOW_RES, PredictLimits, add_mask_pixels, check_work
from samgis.services.predict_output import answer_fields, mask_answer, with_geo
from samgis.services.predict_request import Instance, InstanceQuery, build_instance
from samgis.services.timing import ms


def decode_prompts(engine: Engine, embedding: Embedding, prompts: Prompts, multimask: bool,
                   decode_bytes: int = PredictLimits.decode_bytes) -> DecodeResult:
    """`engine.decode`, with the boxes split into batches whose full-size logits fit in `decode_bytes`.

    Shapes as `DecodeResult`: masks (Q, M, H, W) bool in image px, scores (Q, M), logits (Q, M, 256, 256).
    """
    h, w = embedding.original_size
    n = engine.describe().image_size  # logits pass through the model's n × n input frame
    per_query = (3 if multimask else 1) * (4 * (n * n + h * w) + h * w)  # float32 logits + bool masks
    step = max(1, decode_bytes // per_query)
    if len(prompts.boxes) <= step:
        return engine.decode(embedding, prompts, multimask)
    parts = [engine.decode(embedding, replace(prompts, boxes=prompts.boxes[i:i + step]), multimask)
             for i in range(0, len(prompts.boxes), step)]
    return DecodeResult(masks=np.concatenate([p.masks for p in parts]),
                        scores=np.concatenate([p.scores for p in parts]),
                        logits=np.concatenate([p.logits for p in parts]))




def _embedded(engine: Engine, inst: Instance, embedding: Embedding | None, timings: dict) -> Embedding:
    """`embedding`, or when None the embedding of `inst.image` ((H, W, 3) uint8 RGB), timed as `embed`."""
    if embedding is None:
        t0 = time.perf_counter()
        embedding = engine.embed(inst.image)
        timings["embed"] = ms(t0)
    return embedding


def predict(engine: Engine, inst: Instance, embedding: Embedding | None = None,
            limits: PredictLimits = PredictLimits()) -> dict:
    """The prediction for one instance.

    With prompts: `{"mode": "prompts", "masks": [[mask] * M] * Q, "scores": [[float] * M] * Q,
    "logits"?: encode_array((Q, M, 256, 256)), "image_size": [H, W], "timings_ms"}` — Q = one query per
    box (or one when there are only points), M = 3 with `multimask` else 1, in the engine's (Q, M) order.
    Without: `{"mode": "automatic", "masks": [{"segmentation", "bbox", "area", "predicted_iou",
    "stability_score", "point_coords", "crop_box"}], "grid_points", "image_size", "timings_ms"}`.
    Masks are encoded as `inst.mask_format` (see `encode_mask`) after clipping to `inst.valid` (nodata px
    are never part of a mask). With `inst.postprocess` (mask_format "polygon" only) every outline is
    regularized / smoothed in image px (`encode_outline`) and the answer carries `postprocess`, the step and its
    parameters. With `mask_format` "polygon" and a georeferenced image (`inst.geo`), each mask
    also comes back as GeoJSON geometry (`geo_geometries`): prompts mode adds `masks_lnglat` and `masks_crs`,
    shaped as `masks`; automatic mode adds `segmentation_lnglat` and `segmentation_crs` to each record; both add
    `crs`, the image CRS's name (e.g. "EPSG:32632", rasterio's `CRS.to_string()`, as segment-geospatial's REST
    API names it, samgeo/api.py `_extract_bboxes_from_raster`).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    card = engine.describe()
    if inst.concept is not None:
        return predict_concept(engine, inst, embedding, t_start)
    require(card, required_capabilities(inst.prompts), "prompts")
    require(card, ["multimask"] if inst.multimask and inst.prompts is not None else [], "multimask")
    embedding = _embedded(engine, inst, embedding, timings)
    h, w = inst.image.shape[:2]
    if inst.prompts is None:
        t0 = time.perf_counter()
        records = engine.generate(embedding, inst.amg, inst.image)
        timings["generate"] = ms(t0)
        t0 = time.perf_counter()
        masks = []
        for r in records:
            seg = r["segmentation"] if inst.valid is None else r["segmentation"] & inst.valid
            encoded, lnglat, native = mask_answer(seg, inst)
            rec = {**{k: v for k, v in r.items() if k != "segmentation"}, "segmentation": encoded}
            if with_geo(inst):
                rec["segmentation_lnglat"], rec["segmentation_crs"] = lnglat, native
            masks.append(rec)
        timings["encode"] = ms(t0)
        timings["total"] = ms(t_start)
        out = {"mode": "automatic", "masks": masks, "grid_points": inst.amg.grid_points(), "image_size": [h, w],
               **answer_fields(inst)}
        out["timings_ms"] = timings
        return out
    t0 = time.perf_counter()
    result = decode_prompts(engine, embedding, inst.prompts, inst.multimask, limits.decode_bytes)
    timings["decode"] = ms(t0)
    t0 = time.perf_counter()
    all_masks = result.masks if inst.valid is None else result.masks & inst.valid
    answers = [[mask_answer(m, inst) for m in query] for query in all_masks]
    out = {
        "mode": "prompts",
        "masks": [[a[0] for a in query] for query in answers],
        "scores": result.scores.astype(float).tolist(),
        "image_size": [h, w],
        **answer_fields(inst, [[a[1] for a in query] for query in answers],
                        [[a[2] for a in query] for query in answers]),
    }
    if inst.return_logits:
        out["logits"] = encode_array(result.logits)
    timings["encode"] = ms(t0)
    timings["total"] = ms(t_start)
    out["timings_ms"] = timings
    return out


def find_instances(engine: Engine, inst: Instance, embedding: Embedding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every instance of `inst.concept` on the image of `embedding`, as `predict_concept` answers them:
    (masks (N, H, W) bool image px, clipped to `inst.valid`; scores (N,) float64; boxes (N, 4) float64
    x0, y0, x1, y1 image px, SAM convention, as the model predicted them), best score first (ties keep the
    engine's order); instances left empty by the nodata clip are dropped. The caller checks the capability
    (`require_concept`) before embedding."""
    found = engine.find(embedding, inst.concept, inst.score_threshold)
    masks = np.asarray(found.masks, bool)
    if inst.valid is not None:
        masks = masks & inst.valid
    order = sorted((k for k in range(len(found)) if masks[k].any()), key=lambda k: -float(found.scores[k]))
    h, w = inst.image.shape[:2]
    return (masks[order].reshape(len(order), h, w), np.asarray(found.scores, np.float64)[order].reshape(-1),
            np.asarray(found.boxes, np.float64)[order].reshape(-1, 4))

def predict_concept(engine: Engine, inst: Instance, embedding: Embedding | None = None,
                    t_start: float | None = None) -> dict:
    """The prediction for an instance with concept prompts (`inst.concept`): every instance found, best first.

    `{"mode": "concept", "concept": phrase or "exemplar", "score_threshold", "masks": [mask] * N,
    "scores": [float] * N, "boxes": [[x0, y0, x1, y1]] * N (image px, SAM convention, as the model predicted
    them), "image_size": [H, W], "timings_ms"}`; masks encoded as `inst.mask_format` after clipping to
    `inst.valid`; with "polygon" and a georeferenced image also `masks_lnglat`, `masks_crs` and `crs` (as the
    prompts mode). Instances left empty by the nodata clip are dropped.
    """
    t_start = time.perf_counter() if t_start is None else t_start
    timings: dict[str, float] = {}
    concept = inst.concept
    require_concept(engine.describe(), concept, "text", "exemplar_boxes")
    embedding = _embedded(engine, inst, embedding, timings)
    t0 = time.perf_counter()
    masks, scores, boxes = find_instances(engine, inst, embedding)
    timings["find"] = ms(t0)
    t0 = time.perf_counter()
    h, w = inst.image.shape[:2]
    answers = [mask_answer(m, inst) for m in masks]
    out = {
        "mode": "concept", "concept": concept_label(concept), "score_threshold": inst.score_threshold,
        "masks": [a[0] for a in answers],
        "scores": [round(float(sc), 6) for sc in scores],
        "boxes": [[float(v) for v in b] for b in boxes],
        "image_size": [h, w],
        **answer_fields(inst, [a[1] for a in answers], [a[2] for a in answers]),
    }
    timings["encode"] = ms(t0)
    timings["total"] = ms(t_start)
    out["timings_ms"] = timings
    return out


# --- the service ----------------------------------------------------------------------------------------

def image_cache_key(image: np.ndarray, model_id: str, embedding_version) -> tuple:
    """Embedding cache key of a plain (H, W, 3) uint8 image: ("image", SHA-256 of its pixels, model id,
    embedding version)."""
    return ("image", image_digest(image), model_id, embedding_version)


class ImagePredictService:
    """Plain images through one engine, the shared embedding cache and the model's encoder queue.

    `encoder_queue`: a `samgis.encoder_queue.EncoderQueue` (bounded; 503 when full), or None to run encoder
    passes straight on a worker thread (CLI, tests).
    """

    def __init__(self, engine: Engine, cache: EmbeddingCache, limits: PredictLimits = PredictLimits(),
                 encoder_queue=None):
        self.engine = engine
        self.cache = cache
        self.limits = limits
        self.encoder_queue = encoder_queue
        self._version = engine.describe().embedding_version

    async def embedding_for(self, image: np.ndarray) -> tuple[Embedding, bool]:
        """The embedding of (H, W, 3) uint8 `image` and whether it was cached (key: SHA-256 of the pixels,
        model, embedding version)."""
        key = image_cache_key(image, self.engine.model_id, self._version)

        async def compute() -> Embedding:
            if self.encoder_queue is None:
                return await asyncio.to_thread(self.engine.embed, image)
            return await self.encoder_queue.run(self.engine.embed, image)

        return await self.cache.get_or_compute(key, compute)

    async def predict_instances(self, instances: list[InstanceQuery]) -> list[dict]:
        """One prediction per typed instance (validated at the edge), in order; see `predict`.
        Each also gets `cache` (hit/miss), `model` and `timings_ms` with `image` and `embed`."""
        limits = self.limits
        if len(instances) > limits.max_instances:
            raise InvalidRequest("instances", f"{len(instances)} instances is over the limit of "
                                              f"{limits.max_instances} per request")
        out = []
        mask_pixels = 0
        for i, query in enumerate(instances):
            field_name = f"instances[{i}]"
            t_start = time.perf_counter()
            decoded = await asyncio.to_thread(decode_any_image, query.image, f"{field_name}.image",
                                              limits.max_pixels)
            image = decoded.rgb
            t_image = ms(t_start)
            inst = build_instance(query, field_name, limits, image, decoded.valid, decoded.geo)
            if inst.concept is not None:  # refused before the encoder runs; one window of masks counted
                require_concept(self.engine.describe(), inst.concept, f"{field_name}.text",
                                f"{field_name}.exemplar_boxes")
                cost = max(image.shape[0] * image.shape[1], LOW_RES * LOW_RES)
            else:
                cost = check_work(inst.prompts, inst.multimask, inst.amg, image.shape[:2], field_name, limits,
                                  inst.return_logits)
            mask_pixels = add_mask_pixels(mask_pixels, cost, field_name, limits)
            t0 = time.perf_counter()
            embedding, hit = await self.embedding_for(image)
            t_embed = ms(t0)
            pred = await asyncio.to_thread(predict, self.engine, inst, embedding, limits)
            timings = {"image": t_image, "embed": t_embed, **pred["timings_ms"]}
            timings["total"] = ms(t_start)
            pred.update(cache="hit" if hit else "miss", model=self.engine.model_id, timings_ms=timings)
            out.append(pred)
        return out

    def masks_for(self, image: np.ndarray, embedding: Embedding, queries: list[Prompts],
                  multimask: bool) -> list[tuple[list[np.ndarray], list[float]]]:
        """Per query, its masks ((H, W) bool, image px) and scores; no queries → every automatic mask
        (default options) as its own one-mask entry. Blocks (decodes)."""
        if not queries:
            records = self.engine.generate(embedding, AmgOptions(), image)
            return [([r["segmentation"]], [float(r["predicted_iou"])]) for r in records]
        out = []
        for prompts in queries:
            result = decode_prompts(self.engine, embedding, prompts, multimask, self.limits.decode_bytes)
            out.append((list(result.masks[0]), [float(s) for s in result.scores[0]]))
        return out
