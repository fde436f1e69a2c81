"""Group Sequence Policy Optimization (Zheng et al. 2025) for Varro's daily epoch.

advantages: group-normalised Â (or an EMA baseline); batch: training sequences
from the recorded roll-outs and right-padded batches; logprobs: chunked fp32
token log-probs; objective: GSPO / GSPO-token / GRPO with clipping and k3 KL;
trainer: one epoch (minibatches, accumulation, clipping, AdamW, LoRA, metrics).
"""
