"""The engines' KV-cache events, followed into one cluster-wide index of the blocks each replica holds and
pushed to every Watch stream (docs/ARCHITECTURE.md, "Precise prefix index")."""
