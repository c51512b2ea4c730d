"""Orchestration, HTTP-free: map clicks, automatic masks and concept prompts on map windows (`map_segment`),
plain images (`image_predict`, with the Azure envelope in `azure`); the rules concept prompts follow on every
route (`concepts`). Routers and the CLI call these; these call the engine,
the readers and the vector code."""
