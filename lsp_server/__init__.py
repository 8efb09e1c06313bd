"""Language server for diffusion infilling: ghost text, completions, rewrite, fill on
save. The server is `lsp_server.server` (`create_server`); `infill-lsp` starts it.

Importing the package imports neither pygls nor the engine, so that `infill-lsp
--help` answers at once.
"""

VERSION = "0.1.0"
__version__ = VERSION
