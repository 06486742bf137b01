"""Plumbing every part of the provider shares.

Storage paths, atomic JSON files, the task checkpoint, job id lists, the engines' logger type, and
worker threads with one hook each.
"""
