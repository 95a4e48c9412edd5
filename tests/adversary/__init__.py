"""Attacks by a malicious head-end (issue 12): one harness and one test module per protocol."""
