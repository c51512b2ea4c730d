"""Azure ML's SAM envelope (`POST /score`): rows in, one prediction list per row out. Format only; the
image prediction service runs the rows."""

from __future__ import annotations

import ast
import asyncio
import re

import numpy as np

from samgis.engine.protocol import AmgOptions, ConceptPrompt, require
from samgis.errors import InvalidRequest
from samgis.imaging.images import decode_image
from samgis.imaging.masks import png_encode
from samgis.services.concepts import check_score_threshold, check_text, require_concept
from samgis.services.image_predict import ImagePredictService
from samgis.services.limits import add_mask_pixels, check_work
from samgis.services.predict_prompts import parse_prompts


AZURE_CARD = "https://ai.azure.com/catalog/models/facebook-sam-vit-base"
"""The contract of `POST /score`: the "Sample input and output" of the Azure AI model catalog's SAM cards
(facebook-sam-vit-base / -large / -huge). Input `{"input_data": {"columns": ["image", "input_points",
"input_boxes", "input_labels", "multimask_output"], "index": [...], "data": [[...], ...]}, "params": {}}`;
output a list with one object per input row, `{"predictions": [{"mask_per_prediction": [{"encoded_binary_mask":
"<base64 PNG>", "iou_score": float}]}]}`. Azure's example notebook
(Azure/azureml-examples sdk/python/foundation-models/system/inference/mask-generation/
mask-generation-online-endpoint.ipynb) reads `["response"][i]["predictions"][0]["masks_per_prediction"]`
from a pandas frame instead; the card is the published contract and is followed here. The notebook documents
the input columns: points (P, N, 2) and labels (P, N) as strings of nested lists, boxes (B, 4),
`multimask_output` default true."""

MASK_LIST_KEY = "mask_per_prediction"  # sic, singular "mask" as on the model card

TEXT_COLUMN = "text"
"""Concept prompts in the envelope: the SAM cards' columns have none, so a `text` column is added, named as
transformers' `Sam3Processor(images=..., text=...)` names its phrase (huggingface.co/docs/transformers/model_doc/sam3;
the Azure catalog's facebook-sam3 deployment is served through that library). A row with a phrase answers one
prediction (one prompt) whose `mask_per_prediction` holds every instance found, best first, `iou_score` being the
instance's score; `params.score_threshold` (default 0.5, the processor's `threshold` default) filters them. A phrase
is never mixed with `input_points` / `input_boxes` in one row (their meaning differs: one object vs. exemplars)."""


def azure_prediction(masks: list[np.ndarray], scores: list[float]) -> dict:
    """One Azure prediction: `masks` (H, W) bool in image px, one `iou_score` each."""
    return {MASK_LIST_KEY: [{"encoded_binary_mask": png_encode(m), "iou_score": float(s)}
                            for m, s in zip(masks, scores)]}


def azure_row(predictions: list[dict]) -> dict:
    """One row of the answer, as the card's sample output: `{"predictions": [...]}`, no other wrapper."""
    return {"predictions": predictions}


_NESTED_NUMBERS = re.compile(r"^[\[\]\s\d.,eE+-]*$")


def nested_list(value, field: str):
    """A nested list of numbers from Azure's string form ("[[1, 2], [3, 4]]"), a list, or None for ""/null."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        if not _NESTED_NUMBERS.match(value):
            raise InvalidRequest(field, "expected a nested list of numbers such as \"[[650, 900, 1000, 1250]]\"")
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise InvalidRequest(field, f"not a nested list of numbers ({exc})") from None
    if not isinstance(value, list | tuple):
        raise InvalidRequest(field, "expected a nested list of numbers")
    return value


def _depth(value) -> int:
    d = 0
    while isinstance(value, list | tuple) and value:
        value, d = value[0], d + 1
    return d


def azure_queries(row: dict, size: tuple[int, int], field: str, max_prompts: int) -> list:
    """The `Prompts` of one Azure row, one per prediction, following HF `SamProcessor` shapes.

    `input_points` (P, N, 2) point batches (a plain (N, 2) list is one batch), `input_labels` (P, N)
    (1 include, 0 exclude; -1 and the padding label -10 are dropped; default 1), `input_boxes` (B, 4).
    Prediction i is point batch i together with box i; with only boxes, one prediction per box.
    """
    points = nested_list(row.get("input_points"), f"{field}.input_points")
    labels = nested_list(row.get("input_labels"), f"{field}.input_labels")
    boxes = nested_list(row.get("input_boxes"), f"{field}.input_boxes") or []
    if points is not None and _depth(points) not in (2, 3):
        raise InvalidRequest(f"{field}.input_points", "expected point batches [[[x, y], …], …] (or one batch "
                                                      "[[x, y], …])")
    points = [] if points is None else ([points] if _depth(points) == 2 else points)
    if labels is not None and _depth(labels) == 1:
        labels = [labels]
    if boxes and _depth(boxes) == 1:
        boxes = [boxes]
    if labels is not None and len(labels) != len(points):
        raise InvalidRequest(f"{field}.input_labels", f"{len(labels)} label batches for {len(points)} point batches")
    if points and boxes and len(points) != len(boxes):
        raise InvalidRequest(f"{field}.input_boxes", f"{len(boxes)} boxes for {len(points)} point batches: "
                                                     "give one box per point batch, or only boxes")
    if len(points) + len(boxes) > max_prompts:
        raise InvalidRequest(field, f"over the limit of {max_prompts} prompts per row")
    queries = []
    for i in range(max(len(points), len(boxes))):
        obj: dict = {}
        if points:
            pts = points[i]
            labs = labels[i] if labels is not None else [1] * len(pts)
            if not isinstance(pts, list | tuple) or not isinstance(labs, list | tuple) or len(labs) != len(pts):
                raise InvalidRequest(f"{field}.input_labels[{i}]", "one label per point is needed")
            keep = [k for k, lab in enumerate(labs) if lab not in (-1, -10)]
            obj["points"] = [list(pts[k]) if isinstance(pts[k], list | tuple) else pts[k] for k in keep]
            obj["labels"] = [int(labs[k]) if labs[k] in (0, 1) else labs[k] for k in keep]
        if boxes:
            obj["boxes"] = [list(boxes[i]) if isinstance(boxes[i], list | tuple) else boxes[i]]
        prompts = parse_prompts(obj, size, f"{field}[{i}]", max_prompts)
        if prompts is None:
            raise InvalidRequest(f"{field}.input_points[{i}]", "this point batch has only padding points")
        queries.append(prompts)
    return queries


def row_concept(row: dict, field: str) -> ConceptPrompt | None:
    """The concept of one row: its `text` column (None when absent, null or ""); 422 naming the field when it is
    not a phrase or comes with point/box prompts."""
    value = row.get(TEXT_COLUMN)
    if value is None or value == "":
        return None
    text = check_text(value, f"{field}.{TEXT_COLUMN}")
    for column in ("input_points", "input_boxes", "input_labels"):
        if nested_list(row.get(column), f"{field}.{column}") is not None:
            raise InvalidRequest(f"{field}.{TEXT_COLUMN}", f"a text phrase (find every instance) cannot be mixed "
                                                           f"with {column} (segment one object) in one row")
    return ConceptPrompt(text=text)


async def score_rows(service: ImagePredictService, columns: list[str], data: list[list],
                     params: dict | None = None) -> list[dict]:
    """The answer to Azure's `input_data` (`columns`, `data` rows): one `azure_row` per row, in order.
    `params`: the envelope's `params`; `score_threshold` is read from it for rows with a `text` phrase."""
    limits = service.limits
    params = params or {}
    threshold = check_score_threshold(params.get("score_threshold"), "params.score_threshold")
    if "image" not in columns:
        raise InvalidRequest("input_data.columns", "an \"image\" column is required")
    if len(data) > limits.max_instances:
        raise InvalidRequest("input_data.data", f"{len(data)} rows is over the limit of {limits.max_instances}")
    rows = []
    mask_pixels = 0
    for r, values in enumerate(data):
        field = f"input_data.data[{r}]"
        if len(values) != len(columns):
            raise InvalidRequest(field, f"{len(values)} values for {len(columns)} columns")
        row = dict(zip(columns, values))
        concept = row_concept(row, field)
        if concept is not None:
            require_concept(service.engine.describe(), concept, f"{field}.{TEXT_COLUMN}", f"{field}.{TEXT_COLUMN}")
        image = await asyncio.to_thread(decode_image, row["image"], f"{field}.image", limits.max_pixels)
        if concept is not None:
            mask_pixels = add_mask_pixels(mask_pixels, image.shape[0] * image.shape[1], field, limits)
            embedding, _ = await service.embedding_for(image)
            found = await asyncio.to_thread(service.engine.find, embedding, concept, threshold)
            order = sorted(range(len(found)), key=lambda k: -float(found.scores[k]))
            rows.append(azure_row([azure_prediction([found.masks[k] for k in order],
                                                    [float(found.scores[k]) for k in order])]))
            continue
        queries = azure_queries(row, image.shape[:2], field, limits.max_prompts)
        given = row.get("multimask_output")
        # Azure's default is true; a model without multimask answers one mask unless it was asked for three
        multimask = given if isinstance(given, bool) else service.engine.describe().capabilities.multimask
        for prompts in queries or [None]:  # no prompts: automatic masks with Azure's (our) default grid
            cost = check_work(prompts, multimask, AmgOptions(), image.shape[:2], field, limits)
            mask_pixels = add_mask_pixels(mask_pixels, cost, field, limits)
        require(service.engine.describe(), ["multimask"] if multimask and queries else [],
                f"{field}.multimask_output")
        embedding, _ = await service.embedding_for(image)
        found = await asyncio.to_thread(service.masks_for, image, embedding, queries, multimask)
        rows.append(azure_row([azure_prediction(masks, scores) for masks, scores in found]))
    return rows
