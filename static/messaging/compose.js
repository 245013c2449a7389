// Compose form behaviour.
