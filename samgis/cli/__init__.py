"""The `samgis` command line: `samgis.cli.main` builds the parser from one module per command."""
