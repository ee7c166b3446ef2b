"""Batches of images in one task: items, the sans-IO planner, the ledger, the runner and the manifest.

``FluxBatchOperator`` (:mod:`airflow_provider_doitong.operators.batch`) is built from these;
:mod:`~airflow_provider_doitong.batch.manifest` is public API for any batch's ``manifest.json`` and
contact sheet, mapped ``FluxGenerateOperator`` results included.
"""
