"""Pure retrieval maths: pass@k, ranks, directions, slices, bootstrap intervals and paired tests."""
