"""Talking to OAuth providers: presets per type and the OAuth client."""
