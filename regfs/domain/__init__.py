"""Pure domain layer: no IO, stdlib only. Imports nothing else from regfs."""
