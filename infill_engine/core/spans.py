"""The span slots a single-line fill tries, as one batch of rows.

The language server asks for these at a line, and the concurrency benchmark and the
line-fill eval (`evals.compare`) ask for the same, so they measure what a user gets.
This module imports nothing, so the language server reads it without loading torch.

One row of 16 slots. A second row of 24 (16, 24) cost 40-60 % more time a fill and
matched no more lines: on two draws of 200 held-out line holes per set, the default
model matched 32 / 29 and 34 / 19 lines (held-out files / `sortedcontainers`) with
(16,), and 34 / 32 and 32 / 19 with (16, 24).
"""

LINE_SPAN_LENGTHS = (16,)
