#!/usr/bin/env bash
# The stack's four databases, each owned by its own user: the Airflow metadata database, the MLflow
# tracking store, the warehouse and the hyperparameter search's Optuna studies. Run by the postgres image from /docker-entrypoint-initdb.d on its first
# start only (an empty data volume); names and passwords come from the service's environment.
# Existing roles and databases are left as they are, so running it again changes nothing.
set -euo pipefail

# create_database DATABASE_VAR USER_VAR PASSWORD_VAR: the names of the environment variables holding them.
# psql reads the values itself (\getenv), so no password appears on a command line.
create_database() {
    psql --no-psqlrc --set=ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
        --set=database_var="$1" --set=user_var="$2" --set=password_var="$3" <<'SQL'
\getenv database :database_var
\getenv db_user :user_var
\getenv db_password :password_var
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'db_user', :'db_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'db_user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'database', :'db_user')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'database') \gexec
SQL
}

for name in AIRFLOW_DB_NAME AIRFLOW_DB_USER AIRFLOW_DB_PASSWORD MLFLOW_DB_NAME MLFLOW_DB_USER \
            MLFLOW_DB_PASSWORD WAREHOUSE_DB_NAME WAREHOUSE_DB_USER WAREHOUSE_DB_PASSWORD TUNE_DB_NAME \
            TUNE_DB_USER TUNE_DB_PASSWORD; do
    if [[ -z "${!name:-}" ]]; then
        echo "init-databases.sh: ${name} is not set (see docker/.env.example)" >&2
        exit 1
    fi
done

create_database AIRFLOW_DB_NAME AIRFLOW_DB_USER AIRFLOW_DB_PASSWORD
create_database MLFLOW_DB_NAME MLFLOW_DB_USER MLFLOW_DB_PASSWORD
create_database WAREHOUSE_DB_NAME WAREHOUSE_DB_USER WAREHOUSE_DB_PASSWORD
create_database TUNE_DB_NAME TUNE_DB_USER TUNE_DB_PASSWORD
echo "init-databases.sh: databases ${AIRFLOW_DB_NAME}, ${MLFLOW_DB_NAME}, ${WAREHOUSE_DB_NAME} and ${TUNE_DB_NAME}" \
     "are ready"
