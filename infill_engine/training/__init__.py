"""Training pipeline of the shipped model: corpus, tokenizer, FIM training, evaluation.

    python -m infill_engine.training.corpus   # stdlib + listed wheels -> work-data
    python -m infill_engine.training.vocab --out infill_engine/model
    python -m infill_engine.training.train --out infill_engine/model
    python -m infill_engine.training.evaluate --model infill_engine/model --set heldout

Training examples are laid out by `infill_engine.canvas.plan_canvas`, the function the
engine uses at inference, so the model learns exactly the canvas it is asked to fill.
"""
