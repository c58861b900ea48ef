"""The content-addressed store: chunking, codecs, packs, indexes and manifests. No git here."""
