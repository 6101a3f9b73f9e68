"""The resumable map engine: stages, work state, chunks across processes and nodes, run control."""
