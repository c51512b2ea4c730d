"""Test infrastructure for end-to-end georeferencing tests.

- `scene`: a synthetic world of coloured lng/lat polygons and its XYZ tile renderer.
- `tileserver`: a real HTTP tile server on 127.0.0.1 for a scene, with failing routes.
- `colour_engine`: a test-only Engine that segments the flat colour region under a click.
"""
