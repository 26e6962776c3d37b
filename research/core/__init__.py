"""The leaf every other part of the library shares: errors, losses, the device mesh, run-directory I/O
and the evaluator protocol. It imports no other `research` package."""
