"""Layers the bundled components share (convolution stacks, MLPs, masked fusion operations,
attention blocks, the spectrogram front end).  Not a plugin: it registers nothing."""
