"""`make bench` (``python -m bench``): our stack against the node ``oidc-provider`` peer, side by
side in one run on this machine; see docs/performance.md."""
