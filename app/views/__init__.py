"""The Studio's pages: scripts that ``Home.py`` runs through ``st.navigation`` (not modules to import)."""
