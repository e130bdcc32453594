"""Recovery stage: soft prompt, prefix, LoRA and IDP on top of compressed variants."""
