"""The trainers: one module per algorithm — its Config, ``train(...) -> History`` and the losses
that are its own — on shared plumbing: ``loop`` (the trainer skeleton), ``evaluate`` (the
evaluators) and ``experience`` (A2C and PPO's rollout batches). No algorithm imports another."""
