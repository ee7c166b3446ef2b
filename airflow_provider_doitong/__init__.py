"""Apache Airflow provider for the Doitong image generation API (``flux-krea``, ``flux-dev``).

``client/`` speaks to the Doitong API and decides everything about its answers, ``storage/`` writes
files safely under an output folder, ``batch/`` runs a batch of images on top of both, and the
Airflow layer (``operators/``, ``triggers/``, ``sensors/``, ``hooks/``, ``ui/``, ``decorators/``)
puts all three into Airflow; each imports only the layers before it, and only the Airflow layer
imports Airflow (but for the ``ObjectStoragePath`` that ``storage/`` writes through).

Besides the layers, the root holds this face (the version and what Airflow's providers manager
reads) and ``_compat/``, where the differences between Airflow releases live.
``tests/test_layers.py`` holds the layering against the imports.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_INTEGRATION = "Doitong"


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads; imports nothing heavy."""
    from airflow_provider_doitong.client.contract import DEFAULT_BASE_URL
    from airflow_provider_doitong.hooks.connection import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR

    return {
        "package-name": "airflow-provider-doitong",
        "name": "Doitong",
        "description": "Generate images with the Doitong API (flux-krea, flux-dev) from Airflow DAGs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": DEFAULT_BASE_URL,
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_doitong.hooks.doitong"]}
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_doitong.operators.flux",
                    "airflow_provider_doitong.operators.batch",
                ],
            }
        ],
        "sensors": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_doitong.sensors.doitong"]}
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": [
                    "airflow_provider_doitong.triggers.doitong",
                    "airflow_provider_doitong.triggers.batch",
                ],
            }
        ],
        "task-decorators": [
            {"name": "doitong", "class-name": "airflow_provider_doitong.decorators.doitong.doitong_task"},
            {
                "name": "doitong_batch",
                "class-name": "airflow_provider_doitong.decorators.doitong.doitong_batch_task",
            },
        ],
        "extra-links": [
            "airflow_provider_doitong.operators.links.DoitongImageLink",
            "airflow_provider_doitong.operators.links.DoitongContactSheetLink",
            "airflow_provider_doitong.operators.links.DoitongManifestLink",
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_doitong.hooks.doitong.DoitongHook",
                "hook-name": "Doitong",
                "connection-type": CONN_TYPE,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
