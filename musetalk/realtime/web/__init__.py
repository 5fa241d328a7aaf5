"""The browser side: the page (``static/``), access rules (token, Origin) and Prometheus metrics."""
