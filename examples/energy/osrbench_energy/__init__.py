"""Example third-party osrbench plugin: the energy score (Liu et al., NeurIPS 2020)."""
