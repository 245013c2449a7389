"""Operations: health, metrics, retention, audit, sign-in, permissions, deployment, the demo and run scripts."""
