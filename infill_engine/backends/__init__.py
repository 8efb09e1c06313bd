"""Fills served elsewhere: the wire format shared by clients and server, the Ray Serve
app (`infill serve`), its client, and the vLLM client. Above the engine.
"""
