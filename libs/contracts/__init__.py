"""Contracts: the few operations one service performs on another service's tables, published by
the owner as functions taking the caller's connection (or pool), so they join the caller's
transaction (docs/contracts.md lists every one; docs/architecture.md "Layers").

One module per owning service: ``account`` (users, oauth_apps), ``authz`` (grants,
authorization_codes), ``token`` (signing_keys, token_families, refresh_tokens). This layer sits
above ``libs/oauth`` and below the services: it imports no service, and ``libs/oauth`` and
``libs/platform`` import nothing from it (where they need such a query, the service passes it in).
"""
