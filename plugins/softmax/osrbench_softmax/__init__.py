"""osrbench plugin: the Softmax baseline (MSP and max-logit scores)."""
