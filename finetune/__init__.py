"""Activation-aligned LoRA, language-subnetwork tuning and steering interventions."""
