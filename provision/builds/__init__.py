"""What builds databases: sources and their hash, the pipeline (build, verify, swap), the app's migrations and seed
run against a copy while the live databases are sealed, the Alembic stamp, snapshots, databases that follow the
git branch, drift checks and the tidy-up.

May import: the top-level modules (config, errors, events, endpoint, results, checkpoints, version, gitrepo) and
`postgres/`. Never `targets/`, `testing/`, `api` or `cli`.
"""
