"""Adapters to frameworks that are optional extras: :mod:`.pipecat` (``pip install "musetalk[pipecat]"``).

Each module imports its framework at its top; nothing else in the package imports these modules."""
