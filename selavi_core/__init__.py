"""SeLaVi Studio core: everything that is not user interface.

The data flows one way: media -> catalog (clip manifest) -> run (features and per-head assignments)
-> label store -> exports. Each stage only reads the files of the stage before it.
This package never imports streamlit.
"""

import os

# Before torch, faiss or numba start their thread pools: OpenMP threads that spin while waiting made
# small CPU training steps 10x slower whenever another process competed for the two cores (measured:
# 12-21 s a step spinning, 1.0-1.4 s passive), and numba's default threading layer stalls beside torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

__version__ = "0.1.0"
