"""The generation role: vLLM engines in Ray actors that sample completions and push scored groups."""
