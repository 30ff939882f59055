"""The learner role: DeepSpeed training of the policy against a frozen reference with CoPG, RLOO or AGRO."""
