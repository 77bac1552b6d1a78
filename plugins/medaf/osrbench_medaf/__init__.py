"""osrbench plugin: MEDAF (Multi-Expert Diverse Attention Fusion)."""
