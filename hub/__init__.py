"""The JupyterHub deployment: layered config, the hub's configurer, services, and the `academy` CLI."""
