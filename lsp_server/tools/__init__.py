"""The server's own measurements: an LSP client (`client`), the typing benchmark
(`bench`) and the load test (`loadtest`).
"""
