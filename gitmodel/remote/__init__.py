"""Remotes: a store's packs on any storage a backend reaches (folder, S3, GCS, Azure, SSH,
memory). backend.py moves bytes, view.py knows what a remote holds, transfer.py moves objects.

This package knows packs and objects only; which objects a push or checkout needs is decided
above it (gitmodel.stored, gitmodel.sync).
"""
