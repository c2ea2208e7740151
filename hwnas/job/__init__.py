"""One search job: its stages, its rounds, its store, and the handle that reads it back."""
