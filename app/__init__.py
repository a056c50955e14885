"""SeLaVi Studio, the Streamlit app: ``Home.py`` (the entry script ``selavi app`` runs) and its pages.

The package ships in the wheel, so an installed ``selavi`` finds the Studio through ``HOME`` with no
checkout of the project. Importing it imports nothing else (no streamlit): the scripts under it are
run by Streamlit, not imported.
"""

from __future__ import annotations

from pathlib import Path

#: The entry script: ``streamlit run HOME`` is what ``selavi app`` starts.
HOME = Path(__file__).resolve().with_name("Home.py")
