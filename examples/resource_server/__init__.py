"""A small resource server that charges the platform's users for each call (docs/spending.md)."""
