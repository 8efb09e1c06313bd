"""Code to train and evaluate on: the pinned corpus (`corpus`) and where holes are cut
in it (`holes`). Standard library only.
"""
