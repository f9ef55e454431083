"""edustat: school submission workbooks in, validated DuckDB and Circular 24/2018 reports out."""
__version__ = "0.1.0"
