"""The networks and what runs them: encoders and heads, log-mel front end, checkpoints, inference, device and precision."""
