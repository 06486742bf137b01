"""Plumbing every part of the provider shares: storage paths, atomic JSON files, the task checkpoint,
job id lists and worker threads with one hook each."""
