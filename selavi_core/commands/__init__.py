"""CLI sub-commands, one module each; see ``selavi_core.cli``."""
