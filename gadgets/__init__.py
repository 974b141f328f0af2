"""Streaming Gadgetron gadgets, the standalone server and offline replay for PASSNet."""
