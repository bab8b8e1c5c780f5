"""Models: loading (local, Hub, GGUF), tiny models, packed attention, shipped assets, the demo world."""
