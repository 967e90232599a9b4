"""The policy engine: policy folders loaded into CAPSEM policies, views checked, verdicts enforced."""
