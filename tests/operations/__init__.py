"""Operations: health, metrics, retention, audit, sign-in, permissions, deployment, demo, run script."""
