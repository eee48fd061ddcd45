#!/bin/sh
# The stack's MinIO buckets and MLflow's own access key, allowed on the artifacts bucket only.
# Run by the minio-init service (the mc image: a minimal system, so shell built-ins and mc only) on every
# `docker compose up`; every step is idempotent.
set -eu

policy_file=/tmp/mlflow-artifacts-policy.json

mc alias set stack http://minio:9000 "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}" >/dev/null
mc mb --ignore-existing "stack/${MLFLOW_BUCKET}" "stack/${LAKE_BUCKET}"

cat >"${policy_file}" <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:*"],
     "Resource": ["arn:aws:s3:::${MLFLOW_BUCKET}", "arn:aws:s3:::${MLFLOW_BUCKET}/*"]}
  ]
}
POLICY
mc admin policy create stack mlflow-artifacts "${policy_file}"
mc admin user add stack "${MLFLOW_S3_ACCESS_KEY_ID}" "${MLFLOW_S3_SECRET_KEY}"
user_info="$(mc admin user info stack "${MLFLOW_S3_ACCESS_KEY_ID}")"
case "${user_info}" in
    *mlflow-artifacts*) ;;
    *) mc admin policy attach stack mlflow-artifacts --user "${MLFLOW_S3_ACCESS_KEY_ID}" ;;
esac
echo "init-buckets.sh: buckets ${MLFLOW_BUCKET} and ${LAKE_BUCKET}; MLflow's key ${MLFLOW_S3_ACCESS_KEY_ID}"
