"""Orchestration, HTTP-free: map clicks and automatic masks on map windows (`map_segment`), plain images
(`image_predict`, with the Azure envelope in `azure`). Routers and the CLI call these; these call the engine,
the readers and the vector code."""
