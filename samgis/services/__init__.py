"""Orchestration, HTTP-free. Routers and the CLI call these; these call the engine, the readers and the vector code.

Map requests: `map_segment` (`SegmentService`: one click, and the entry of every map request), `map_query` (the
requests), `map_windows` (sources, windows and their embeddings), `follow` (objects across window seams),
`map_find` (concept prompts in a bbox), `map_everything` (automatic masks), `map_features` (the GeoJSON answer).
Plain images: `image_predict` (`ImagePredictService`: runs instances), `predict_request` and `predict_prompts`
(an instance as sent → `Instance`), `predict_output` (mask encodings), with the Azure envelope in `azure`.
Shared: `limits` (what one request may cost), `timing` (stage timings, deadlines), `concepts` (the rules concept
prompts follow on every route), `area_segment` (batch jobs through the same windows and cache)."""
