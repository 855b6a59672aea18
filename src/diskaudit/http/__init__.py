"""The ASGI application and its server: routing, authentication, TLS. No business logic."""
