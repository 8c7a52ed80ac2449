"""DuckDB SQL recipes (plain .sql files) that select a subset of a pool."""
