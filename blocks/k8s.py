"""One way to reach a Kubernetes API, for the target and the discovery source alike:
exactly as for any real cluster — a kubeconfig (+ context) or the in-cluster account."""

from __future__ import annotations

from kubernetes import client, config


def api_client(in_cluster: bool, kubeconfig_path: str | None, context: str | None) -> client.ApiClient:
    """Raises ``ConfigException`` or ``OSError``; callers name themselves in the error."""
    if in_cluster:
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    # persist_config=False: never rewrite the user's kubeconfig (token refreshes).
    return config.new_client_from_config(config_file=kubeconfig_path, context=context, persist_config=False)
