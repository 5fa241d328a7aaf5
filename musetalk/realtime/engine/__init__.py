"""The real-time engine: sessions on a media clock, audio streamed into prompts, frames batched across
sessions earliest-deadline-first, rendered and handed to each session's outbox with their index."""
