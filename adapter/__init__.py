"""The Litestar service around the translator: routes, auth, errors, the durable store, delivery, CLI."""
