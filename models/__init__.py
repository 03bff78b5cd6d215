"""The model layer: loading (dtype, quantization, attention, random weights), variants, devices, prompt
tokenizing, the shipped Qwen3 configs, and the tiny pair with its training script (models/tiny/)."""
