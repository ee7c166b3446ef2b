"""Apache Airflow provider for the Doitong image generation API (``flux-krea``, ``flux-dev``)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_INTEGRATION = "Doitong"


def get_provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads; imports nothing heavy."""
    from airflow_provider_doitong.contract import DEFAULT_BASE_URL, PLANS

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
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_doitong.operators.flux"]}
        ],
        "sensors": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_doitong.sensors.doitong"]}
        ],
        "triggers": [
            {"integration-name": _INTEGRATION, "python-modules": ["airflow_provider_doitong.triggers.doitong"]}
        ],
        "extra-links": ["airflow_provider_doitong.links.DoitongImageLink"],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_doitong.hooks.doitong.DoitongHook",
                "hook-name": "Doitong",
                "connection-type": "doitong",
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "schema", "port"],
                    "relabeling": {"host": "Base URL", "password": "API key"},
                    "placeholders": {"host": DEFAULT_BASE_URL, "password": "your Doitong API key"},
                },
                "conn-fields": {
                    "plan": {
                        "label": "Plan",
                        "description": "The account's plan; sets the default concurrency and request pacing.",
                        "schema": {"type": ["string", "null"], "enum": [*PLANS, None], "default": "pro"},
                    },
                    "transport": {
                        "label": "Transport",
                        "description": "Submit jobs through GraphQL or the REST endpoint.",
                        "schema": {"type": ["string", "null"], "enum": ["graphql", "rest", None], "default": "graphql"},
                    },
                    "webhook_secret": {
                        "label": "Webhook secret",
                        "description": "Verifies X-Doitong-Signature on webhook deliveries.",
                        "schema": {"type": ["string", "null"], "format": "password"},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Timeout of each HTTP request to the API.",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": 30},
                    },
                },
            }
        ],
    }
