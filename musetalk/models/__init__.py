"""Networks and their checkpoints: UNet, VAE, whisper encoder, plus the file layout and download."""
