"""osrbench plugin: Class Anchor Clustering (CAC)."""
