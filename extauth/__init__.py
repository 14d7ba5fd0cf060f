"""extauth: links users' accounts to external OAuth providers and keeps their tokens."""
