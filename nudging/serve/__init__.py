"""`nudging serve`: a nudged model pair behind an OpenAI-compatible HTTP API."""
