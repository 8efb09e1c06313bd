"""Held-out evaluations: `compare` (fills against the base written left to right),
`evaluate`, the polyglot set and the everyday shapes (`shapes`). Evaluations may parse
with tree-sitter; nothing that fills imports them.
"""
