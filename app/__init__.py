"""SeLaVi Studio, the Streamlit app: ``Home.py`` (the entry script), its pages, and ``studio_server.py``.

The package ships in the wheel, so an installed ``selavi`` finds the Studio through ``HOME`` with no
checkout of the project. Importing it imports nothing else (no streamlit): the scripts under it are
run by Streamlit, not imported.
"""

from __future__ import annotations

from pathlib import Path

#: The entry script (pages and sidebar): what AppTest and a plain ``streamlit run HOME`` run.
HOME = Path(__file__).resolve().with_name("Home.py")
#: What ``selavi app`` starts: ``streamlit run SERVER`` serves ``HOME`` plus the clip media route.
SERVER = Path(__file__).resolve().with_name("studio_server.py")
