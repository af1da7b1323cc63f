#!/usr/bin/env bash
# Creates the databases and the least-privilege roles of catalog-tagger. Idempotent.
#
# The postgres image runs this once, on an empty data directory (/docker-entrypoint-initdb.d). For a managed
# server run it by hand as an administrator: PGHOST=... PGUSER=... POSTGRES_USER=$PGUSER ./10-databases-and-roles.sh
#
# Databases and owners: tagger (tagger_app: the tag library, migrated with Alembic), mlflow (mlflow), airflow
# (airflow). storefront may connect to tagger only and is read-only; it gets SELECT on the storefront tables
# after the migrations created them (infra/postgres/grants/storefront.sql, applied by migrate_and_grant.py).
set -euo pipefail

: "${APP_DB_PASSWORD:?set APP_DB_PASSWORD, the password of role tagger_app}"
: "${STOREFRONT_DB_PASSWORD:?set STOREFRONT_DB_PASSWORD, the password of role storefront}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD, the password of role mlflow}"
: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD, the password of role airflow}"

run_psql() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" "$@"
}

run_psql --dbname postgres \
    -v app_pw="$APP_DB_PASSWORD" -v storefront_pw="$STOREFRONT_DB_PASSWORD" \
    -v mlflow_pw="$MLFLOW_DB_PASSWORD" -v airflow_pw="$AIRFLOW_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I', r)
FROM unnest(ARRAY['tagger_app', 'storefront', 'mlflow', 'airflow']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
\gexec

ALTER ROLE tagger_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
ALTER ROLE storefront LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'storefront_pw';
ALTER ROLE mlflow     LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'mlflow_pw';
ALTER ROLE airflow    LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'airflow_pw';
-- Defence in depth: even a grant added by mistake later cannot make the storefront write.
ALTER ROLE storefront SET default_transaction_read_only = on;

SELECT format('CREATE DATABASE %I OWNER %I', db, owner)
FROM (VALUES ('tagger', 'tagger_app'), ('mlflow', 'mlflow'), ('airflow', 'airflow')) AS d(db, owner)
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = db)
\gexec

REVOKE ALL ON DATABASE tagger, mlflow, airflow FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE tagger TO tagger_app;
GRANT CONNECT ON DATABASE tagger TO storefront;
GRANT CONNECT, TEMPORARY ON DATABASE mlflow TO mlflow;
GRANT CONNECT, TEMPORARY ON DATABASE airflow TO airflow;
SQL

# Schema-level rights inside the tag library; table-level SELECT for the storefront comes after migrations.
run_psql --dbname tagger <<'SQL'
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO tagger_app;
GRANT USAGE ON SCHEMA public TO storefront;
SQL
