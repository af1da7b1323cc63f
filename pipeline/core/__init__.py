"""Base services every stage stands on: where Postgres and the MLflow store live, MLflow set-up, migrations.

Takes the settings; gives engines, database URLs, a configured MLflow client and the migrated schema. Imports
nothing from the stages above it.
"""
