"""The engine: the state machine, preparing, delivering, channels, rate limits, sending control."""
