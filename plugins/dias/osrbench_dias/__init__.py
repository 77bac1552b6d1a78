"""osrbench plugin: DIAS, the Difficulty-Aware Simulator for open-set recognition."""
