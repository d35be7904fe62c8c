"""What talks to a PostgreSQL server: operations over a psycopg2 connection, psql streaming, readiness, retries.

May import: the top-level leaf modules (config, errors, endpoint, checkpoints). Nothing from `builds/`,
`targets/`, `testing/`, `api` or `cli`.
"""
