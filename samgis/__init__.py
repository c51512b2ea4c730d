"""samgis: segment web-map tiles and images with Segment Anything, get georeferenced polygons."""

__version__ = "0.1.0"
