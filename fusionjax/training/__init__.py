"""Training: the optimiser from config, the compiled steps, and the loop."""
