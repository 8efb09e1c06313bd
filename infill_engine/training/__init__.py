"""Training pipeline: corpus, adaptation of the default model, evaluation.

    python -m infill_engine.data.corpus   # stdlib + listed wheels -> work-data
    python -m infill_engine.training.adapt    # the default model's adapter
    python -m infill_engine.training.datapack # tokenised once, holes planned
    python -m infill_engine.training.gpu_run  # train on a GPU, judge, bench
    python -m infill_engine.evals.compare  # line fills against left to right
    python -m infill_engine.evals.evaluate --model DIR --set heldout

`vocab` and `train` train a small DiffusionGemma from scratch (how the project's first,
8M-parameter model was made).

Training examples are laid out by `infill_engine.core.canvas.plan_canvas`, the function
the engine uses at inference, so the model learns exactly the canvas it is asked to
fill.
"""
