"""Restoration service: region masks from landmarks, feathered compositing, face restoration."""
