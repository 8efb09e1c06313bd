"""Language server for diffusion infilling: ghost text, completions, rewrite, fill on
save."""

from lsp_server.server import VERSION, InfillServer, create_server

__all__ = ["VERSION", "InfillServer", "create_server"]
__version__ = VERSION
