"""Real-time avatars: prepare a video or photo once (:mod:`.avatar`), stream speech in and composited
frames out for many sessions on one model (:mod:`.engine`, :mod:`.streaming`), served over HTTP and
WebSocket to a browser page (:mod:`.server`, ``static/``)."""
