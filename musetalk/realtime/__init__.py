"""Real-time avatars, in rooms that show the data flow:

- :mod:`.avatars`: an avatar prepared once from a video or photo (format, fingerprint, preparation, cache,
  staging, HTTP routes, background jobs);
- :mod:`.engine`: one model shared by many sessions (engine, session, streaming audio -> prompts, outbox,
  render cost, admission, stats, compositing);
- :mod:`.outputs`: what carries a session's frames away (WebSocket JPEG, a recorded file);
- :mod:`.web`: the browser page (``static/``), access rules and metrics; :mod:`.server` assembles the app.

Outputs depend on the engine, never the other way."""
