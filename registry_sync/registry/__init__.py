"""Talking to registries: the OCI distribution client (ping, auth, blobs, uploads, manifests, tags), credentials,
image references, the embedded registry server, and opening a client for an address.

Owns: client.py, auth.py, reference.py, server.py, connect.py. May import: builder.errors, builder.settings,
builder.oci. Knows nothing of plans or images in the engine.
"""
