"""Remotes: a store's packs on any storage fsspec reaches (folder, S3, GCS, Azure, SSH, memory).

A remote has the same layout as the local store, `<url>/packs/pack-<hex>.pack` and `.idx`, so a
local store directory is itself a valid remote URL. This package knows packs and objects only;
which objects a git push or checkout needs is decided above it, in gitmodel.git.
"""
