"""Getting a model onto the device: conversion from Gemma 3, the vocabulary trim, the
default model's build, the adapter (LoRA) merge, loading and device choice, and the
tiny configurations the tests build. Imports only `core`.
"""
