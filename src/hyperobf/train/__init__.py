"""PSP-side training: configs, data, losses, objectives, the training loop and checkpoints."""
