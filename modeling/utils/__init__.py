"""Utilities shared by every layer: atomic file writes and staged folders (`io`)."""
