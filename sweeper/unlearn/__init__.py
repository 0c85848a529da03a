"""The worker side, Ray-free: one trial's unlearning loop, AutoLR, collectives, FSDP2, target fine-tuning."""
