"""The fill itself: canvas layout, the decoder's forward, sampling, stopping and
the denoising loop (`loop.denoise`, `loop.decode_floor`). Imports nothing else of the
package.
"""
