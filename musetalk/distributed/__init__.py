"""Past one machine, on Ray: batch dubbing (:mod:`.batch`), long videos cut into chunks (:mod:`.chunks`) and
real-time serving on Ray Serve (:mod:`.serve`).

A driver above :mod:`musetalk.pipeline` and :mod:`musetalk.realtime`: nothing below this folder imports
``ray``, so the package works without it; ``ray`` is imported by the modules here that need it, on use.
"""
