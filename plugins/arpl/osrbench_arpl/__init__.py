"""osrbench plugin: ARPL and ARPL+CS (Chen et al., TPAMI 2021)."""
