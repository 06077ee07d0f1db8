"""Making a fine-tuned model smaller: structured pruning (`prune`) and magnitude pruning
(`sparsity`); distillation lives in `tfllm.finetune.distill`."""
