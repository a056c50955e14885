"""SeLaVi Studio core: everything that is not user interface.

The data flows one way: media -> catalog (clip manifest) -> run (features and per-head
assignments) -> label store -> exports. Each stage only reads the files of the stage before it.
This package never imports streamlit.
"""

__version__ = "0.1.0"
