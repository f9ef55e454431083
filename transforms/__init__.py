"""Pure DataFrame-in / DataFrame-out steps. No file, DuckDB, Prefect or openpyxl imports here
(a test guards this)."""
