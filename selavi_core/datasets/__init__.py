"""Data sets the project can build itself (AV digits: MNIST or sklearn digits x spoken digits)."""
