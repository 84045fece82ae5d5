"""Airflow: local-mode configuration, the DAG's step runner, and the `./run.sh pipeline` client."""
