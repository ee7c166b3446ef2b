"""Batches of images in one task: items, the sans-IO planner, the ledger, the runner and the manifest.

No Airflow import: the batch stands on the client and the storage layer; the Airflow side of a
batch (its task instance, its ledger's place, how its task ends) is :mod:`~airflow_provider_doitong.operators.batch_task`'s.

``FluxBatchOperator`` (:mod:`airflow_provider_doitong.operators.batch`) is built from these;
:mod:`~airflow_provider_doitong.batch.manifest` is public API for any batch's ``manifest.json`` and
contact sheet, mapped ``FluxGenerateOperator`` results included.
"""
