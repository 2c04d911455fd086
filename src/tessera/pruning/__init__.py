"""HOW a model gets sparse: targets, masks on modules, ADMM and one-shot algorithms, a small trainer."""
